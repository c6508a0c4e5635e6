//! One conversation with systemd, held by the launcher (and by `ps`, `stop` and
//! `doctor`): a single-threaded async runtime and at most one connection per
//! service manager, made when first needed and reused by every call after it.
//! Dropping the session joins the runtime's threads, so a process that forks
//! afterwards is single-threaded again.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use super::Manager;
use super::client::Client;

pub struct Session {
    runtime: tokio::runtime::Runtime,
    clients: Vec<Client>,
}

/// Connecting to a manager's bus failed or took too long: nothing was asked of it.
#[derive(Debug)]
pub struct Unanswered(pub anyhow::Error);

impl Unanswered {
    /// What failed, in the fewest words (the bus's own error).
    pub fn reason(&self) -> String {
        self.0.root_cause().to_string()
    }
}

impl Session {
    pub fn new() -> Result<Session> {
        super::RUNTIME_MADE.store(true, std::sync::atomic::Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Session { runtime, clients: Vec::new() })
    }

    /// Connect to `manager`'s bus and subscribe, unless connected already; give up
    /// after `within`.
    pub fn connect(&mut self, manager: Manager, within: Duration) -> Result<(), Unanswered> {
        if self.clients.iter().any(|client| client.kind == manager) {
            return Ok(());
        }
        let client = self.runtime.block_on(async {
            match tokio::time::timeout(within, Client::connect(manager)).await {
                Ok(result) => result,
                Err(_) => Err(anyhow!(
                    "systemd did not answer within {} s on the {} bus",
                    within.as_secs(),
                    manager.bus()
                )),
            }
        });
        self.clients.push(client.map_err(Unanswered)?);
        Ok(())
    }

    /// Run `call` with `manager`'s client on the session's runtime, connecting
    /// first (within `within`) if this session has not yet.
    pub fn with<T>(
        &mut self,
        manager: Manager,
        within: Duration,
        call: impl AsyncFnOnce(&mut Client) -> T,
    ) -> Result<T, Unanswered> {
        self.connect(manager, within)?;
        let Session { runtime, clients } = self;
        let client = clients.iter_mut().find(|client| client.kind == manager).expect("connected above");
        Ok(runtime.block_on(call(client)))
    }

    /// Run a future that needs no connection (a timer, a socket) on the runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
