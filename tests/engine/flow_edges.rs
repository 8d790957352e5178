//! A flow's edges read on their own (reference: `list_edges`,
//! `describe_edge`): all of them, a member's outgoing or incoming ones, or
//! one by its two keys, each with both ends' executions and its state as the
//! flow runs; another tenant's flow is not found.

use flowfabric::model::{EdgeState, Failure, FailureClass, FlowId};
use flowfabric_tests::Store;

use crate::flows::{claim_all, create, edge, graph, member, no_retry, passing};
use crate::setup_on;

async fn edges_are_listed_by_member_and_described_one_by_one(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(
            vec![no_retry(member("a")), member("b"), member("c"), member("d")],
            vec![
                passing("a", "b"),
                edge("a", "c"),
                edge("b", "d"),
                edge("c", "d"),
            ],
        ),
    )
    .await;
    let pairs = |edges: &[flowfabric::model::FlowEdgeDetail]| {
        edges
            .iter()
            .map(|ed| format!("{}>{}", ed.from, ed.to))
            .collect::<Vec<_>>()
    };
    let all = e.flow_edges(t, f.flow_id, None, None).await.unwrap();
    assert_eq!(pairs(&all), ["a>b", "a>c", "b>d", "c>d"]);
    assert!(all.iter().all(|ed| ed.state == EdgeState::Pending));
    assert_eq!(all[0].from_execution_id, f.members["a"]);
    assert_eq!(all[0].to_execution_id, f.members["b"]);
    assert!(all[0].pass_result && !all[1].pass_result);

    let out_of_a = e.flow_edges(t, f.flow_id, Some("a"), None).await.unwrap();
    assert_eq!(pairs(&out_of_a), ["a>b", "a>c"]);
    let into_d = e.flow_edges(t, f.flow_id, None, Some("d")).await.unwrap();
    assert_eq!(pairs(&into_d), ["b>d", "c>d"]);
    let none = e.flow_edges(t, f.flow_id, Some("d"), None).await.unwrap();
    assert!(none.is_empty(), "d has no outgoing edges");

    // `a` fails: both its edges become unsatisfied, and describe says so.
    let mut claimed = claim_all(e).await;
    let a = claimed.remove(&f.members["a"]).unwrap();
    e.fail(&a.lease, Failure::new(FailureClass::Permanent, "no"))
        .await
        .unwrap();
    let ab = e.flow_edge(t, f.flow_id, "a", "b").await.unwrap();
    assert_eq!(ab.state, EdgeState::Unsatisfied);
    assert_eq!(
        ab,
        e.flow_edges(t, f.flow_id, Some("a"), Some("b"))
            .await
            .unwrap()[0]
    );

    let err = e.flow_edge(t, f.flow_id, "b", "a").await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
    assert!(err.to_string().contains("b -> a"), "{err}");
    let err = e
        .flow_edges(t, f.flow_id, Some("not a key!"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_input", "{err}");
    let err = e
        .flow_edges(t, FlowId::new(), None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");

    let other = db.tenant("other").await;
    let err = e
        .flow_edges(other, f.flow_id, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found", "another tenant's flow: {err}");
    let err = e.flow_edge(other, f.flow_id, "a", "b").await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
}

async fn a_flow_without_edges_lists_none(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(e, t, graph(vec![member("solo")], vec![])).await;
    assert!(e
        .flow_edges(t, f.flow_id, None, None)
        .await
        .unwrap()
        .is_empty());
}

on_both_backends!(
    edges_are_listed_by_member_and_described_one_by_one,
    a_flow_without_edges_lists_none,
);
