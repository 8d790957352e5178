//! The baseline that `flowfabric bench languages` measures the sandbox
//! against: the same compiled component, instantiated and called by wasmtime
//! directly on the caller's task, with nothing of ours around it.
//!
//! Why it exists: a guest language's per-task cost has two parts, what the
//! component costs wasmtime (its instantiation, its first call, resetting its
//! memory) and what our path adds (the attempt's host state, the hop to a
//! guest thread, fair turns, the epoch callback, the limiter). Only a
//! baseline run in the same process, on the same engine and at the same
//! time tells them apart; a figure measured elsewhere, on another day, does
//! not (this machine's runs differ by up to 2× minutes apart).
//!
//! The baseline links WASI without preopens or network, `wasi:http` with a
//! sender that refuses every request, `wasi:config` with no values, and the
//! `flowfabric:task` imports as functions that fail: only a task that calls
//! no host function (the no-op) runs here. It is for measuring, never for
//! running tenants' work.
//!
//! For `flowfabric bench http` its sender can instead send every request
//! as it is, with hyper, on one connection kept open (`sending_http`): no
//! grant, address check, meter or log. A guest's request then costs what
//! wasmtime's `wasi:http` and the guest's own HTTP code cost, and the
//! difference to the sandbox's figure is our sender's work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;

use wasmtime::component::{InstancePre, Linker, ResourceTable, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::{internal, ComponentError, Prepared, EPOCH_TICK};

/// How long one baseline call may run before its epoch deadline traps it.
const DEADLINE: Duration = Duration::from_secs(60);

/// A component ready to run the baseline way.
pub struct Baseline {
    engine: Engine,
    pre: InstancePre<BareState>,
    sender: BareSender,
}

/// Where one baseline task's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct BaselineTimes {
    /// A fresh store and instance.
    pub instantiate: Duration,
    /// The `run` call.
    pub run: Duration,
    /// Dropping the store: memory and tables back to the pool.
    pub teardown: Duration,
}

impl super::Runtime {
    /// The baseline for `component`: the same compiled code on the same
    /// engine, linked without our host functions.
    pub fn baseline(&self, component: &Prepared) -> Result<Baseline, ComponentError> {
        let component = component.0.instance_pre().component().clone();
        let mut linker = Linker::<BareState>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(internal)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(internal)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut BareState| {
            WasiConfig::from(&s.config)
        })
        .map_err(internal)?;
        stub_task_imports(&mut linker, &component)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| ComponentError::WorldMismatch(format!("{e:#}")))?;
        Ok(Baseline {
            engine: self.engine.clone(),
            pre,
            sender: BareSender::Refuse,
        })
    }

    /// [`Self::baseline`] whose `wasi:http` requests are sent, each as it
    /// is, on one connection kept open between requests and runs (to the
    /// first origin asked for; the bench asks for one): for measuring a
    /// guest's request without our sender around it.
    pub fn baseline_sending_http(&self, component: &Prepared) -> Result<Baseline, ComponentError> {
        Ok(Baseline {
            sender: BareSender::Plain(Arc::default()),
            ..self.baseline(component)?
        })
    }
}

/// Every `flowfabric:task` function the component imports, as one that fails.
fn stub_task_imports(
    linker: &mut Linker<BareState>,
    component: &wasmtime::component::Component,
) -> Result<(), ComponentError> {
    let engine = linker.engine().clone();
    for (name, import) in component.component_type().imports(&engine) {
        let wasmtime::component::types::ComponentItem::ComponentInstance(instance) = import.ty
        else {
            continue;
        };
        if !name.starts_with("flowfabric:") {
            continue;
        }
        let functions: Vec<String> = instance
            .exports(&engine)
            .filter(|(_, item)| {
                matches!(
                    item.ty,
                    wasmtime::component::types::ComponentItem::ComponentFunc(_)
                )
            })
            .map(|(name, _)| name.to_string())
            .collect();
        let mut linked = linker.instance(name).map_err(internal)?;
        for function in functions {
            linked
                .func_new(&function, |_, _, _, _| {
                    Err(wasmtime::Error::msg("the baseline links no host functions"))
                })
                .map_err(internal)?;
        }
    }
    Ok(())
}

impl Baseline {
    /// A fresh store and instance and one `run(input)` on the caller's task:
    /// the guest's answer (its `ok` bytes, or what went wrong) and the times.
    pub async fn run(&self, input: &[u8]) -> (Result<Vec<u8>, String>, BaselineTimes) {
        let state = BareState::new(self.sender.clone());
        let started = Instant::now();
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(DEADLINE.as_millis() as u64 / EPOCH_TICK.as_millis() as u64);
        let mut times = BaselineTimes::default();
        let answer = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let run = instance
                .get_func(&mut store, "run")
                .ok_or_else(|| wasmtime::Error::msg("the component exports no `run`"))?;
            let calling = Instant::now();
            times.instantiate = calling - started;
            let input = Val::List(input.iter().map(|b| Val::U8(*b)).collect());
            let mut result = [Val::Bool(false)];
            run.call_async(&mut store, &[input], &mut result).await?;
            times.run = calling.elapsed();
            Ok::<_, wasmtime::Error>(result)
        }
        .await;
        let dropping = Instant::now();
        drop(store);
        times.teardown = dropping.elapsed();
        let answer = match answer {
            Ok([Val::Result(Ok(Some(bytes)))]) => bytes_of(&bytes),
            Ok([other]) => Err(format!("`run` answered {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        };
        (answer, times)
    }
}

impl Baseline {
    /// One fresh instance, then `calls` calls of `run(input)` on it: every
    /// call's answer and time, the first call first. It stops at the first
    /// call that fails.
    ///
    /// By default the sandbox gives every attempt a fresh instance, so
    /// nothing one run leaves in its memory reaches the next (a grant's
    /// `reuse_instances` trades that away; see `warm`). This measures what a
    /// call costs once the instance exists, beside what a fresh instance
    /// costs (`run`), which is the price of that isolation.
    pub async fn run_on_one_instance(
        &self,
        input: &[u8],
        calls: usize,
    ) -> Result<Vec<(Vec<u8>, Duration)>, String> {
        let mut store = Store::new(&self.engine, BareState::new(self.sender.clone()));
        store.set_epoch_deadline(DEADLINE.as_millis() as u64 / EPOCH_TICK.as_millis() as u64);
        let failed = |e: wasmtime::Error| format!("{e:#}");
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(failed)?;
        let run = instance
            .get_func(&mut store, "run")
            .ok_or("the component exports no `run`")?;
        let mut answers = Vec::with_capacity(calls);
        for _ in 0..calls {
            let calling = Instant::now();
            let input = Val::List(input.iter().map(|b| Val::U8(*b)).collect());
            let mut result = [Val::Bool(false)];
            run.call_async(&mut store, &[input], &mut result)
                .await
                .map_err(failed)?;
            let took = calling.elapsed();
            let answer = match result {
                [Val::Result(Ok(Some(bytes)))] => bytes_of(&bytes)?,
                [other] => return Err(format!("`run` answered {other:?}")),
            };
            answers.push((answer, took));
        }
        Ok(answers)
    }
}

fn bytes_of(value: &Val) -> Result<Vec<u8>, String> {
    match value {
        Val::List(items) => items
            .iter()
            .map(|item| match item {
                Val::U8(b) => Ok(*b),
                other => Err(format!("`run` answered a list holding {other:?}")),
            })
            .collect(),
        other => Err(format!("`run` answered {other:?}")),
    }
}

/// A store with nothing granted and nothing of ours in it.
struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    sender: BareSender,
    config: WasiConfigVariables,
}

impl BareState {
    /// As the sandbox's WASI context denies (`sandbox::StoreState::new`):
    /// no sockets, no name lookups, nothing preopened, an empty environment.
    fn new(sender: BareSender) -> Self {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            sender,
            config: WasiConfigVariables::new(),
        }
    }
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for BareState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.sender,
        }
    }
}

/// The baseline's `wasi:http` sender.
#[derive(Clone)]
enum BareSender {
    /// Every request is refused.
    Refuse,
    /// Every request is sent as it is, on the one connection kept here.
    Plain(Arc<tokio::sync::Mutex<Option<SendRequest<WasiBody>>>>),
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
);

impl WasiHttpHooks for BareSender {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn std::future::Future<Output = Result<Sent, HttpError>> + Send> {
        match self {
            Self::Refuse => Box::new(async { Err(HttpError::HttpRequestDenied) }),
            Self::Plain(kept) => Box::new(send_plain(kept.clone(), request)),
        }
    }
}

/// Send `request` on the kept connection, opening it first if there is
/// none; the response's body is the connection's, unchecked and uncounted.
async fn send_plain(
    kept: Arc<tokio::sync::Mutex<Option<SendRequest<WasiBody>>>>,
    mut request: http::Request<WasiBody>,
) -> Result<Sent, HttpError> {
    let mut kept = kept.lock().await;
    let mut sender = match kept.take() {
        Some(sender) => sender,
        None => {
            let uri = request.uri();
            let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
            let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|_| HttpError::ConnectionRefused)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(tcp))
                    .await
                    .map_err(HttpError::from)?;
            tokio::spawn(conn);
            sender
        }
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    sender.ready().await.map_err(HttpError::from)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(HttpError::from)?;
    *kept = Some(sender);
    let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
    Ok((response, Box::new(async { Ok(()) })))
}
