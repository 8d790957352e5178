//! The notification connection goes silent (open, but nothing arrives: a NAT or
//! firewall forgot the idle flow) while a worker pool runs. Nobody sees an
//! error, so nothing reconnects; polling alone must keep work flowing. Runs
//! through a loopback proxy that silences the engine's `LISTEN` connection and
//! nothing else; stops by itself.

use std::time::Duration;

use flowfabric::engine::Limits;
use flowfabric::model::{NewExecution, PublicState};
use flowfabric::worker::{WorkerConfig, WorkerPool};
use flowfabric_tests::{guest, runtime, server_url, Proxy, TestDb};

const WAVES: usize = 5;
const PER_WAVE: usize = 10;

#[tokio::test]
async fn a_silent_notification_connection_leaves_polling_to_keep_work_flowing() {
    let proxy = Proxy::start(&server_url(), br#"LISTEN "flowfabric_work""#).await;
    let db = TestDb::on_server(&proxy.url(), Limits::default()).await;
    let tenant = db.tenant("acme").await;
    flowfabric::components::register(&db.engine, &runtime(), tenant, "testkit", &guest("testkit"))
        .await
        .unwrap();
    let pool = WorkerPool::start(
        db.engine.clone(),
        runtime(),
        WorkerConfig {
            slots: 2,
            poll_interval: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.marked() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nobody listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.silence_marked(), 1, "one listener connection");
    let mut woken = db.engine.work_signal().await.unwrap();
    woken.borrow_and_update();

    // Waves: the pool goes idle between them, so each needs a wake-up.
    for wave in 0..WAVES {
        let batch: Vec<NewExecution> = (0..PER_WAVE)
            .map(|_| NewExecution::new("testkit", b"frames:2".to_vec()))
            .collect();
        for created in db.engine.create_batch(tenant, &batch).await.unwrap() {
            let ex = db
                .wait_terminal(tenant, created.execution_id, Duration::from_secs(20))
                .await;
            assert_eq!(ex.state, PublicState::Completed, "wave {wave}");
        }
    }

    assert!(
        proxy.swallowed() > 0,
        "the server's notifications must have been sent and lost"
    );
    assert!(
        !woken.has_changed().unwrap(),
        "no notification may have got through: polling did the waking"
    );
    pool.shutdown().await;
}
