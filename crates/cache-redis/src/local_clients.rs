//! Command clients that live on the thread that uses them: each thread sending commands through
//! a [`RedisCache`](crate::RedisCache) (an HTTP worker, the main runtime) gets a client of its
//! own, whose connection task runs on that thread's runtime.
//!
//! Why: a client's connection task runs on the runtime that connected it. The shared pool is
//! connected at start-up on the main runtime, so every command a worker sent crossed to the main
//! thread and its reply crossed back: two cross-thread wake-ups per command, and a third busy
//! thread on the cores the workers need. With one `INCR` per proxied request (rotation block
//! size 1) that cost about a fifth of the enterprise server's CPU per request.
//!
//! Invariants:
//! - A thread's client is opened on its first command and serves once it has connected; until
//!   then, and whenever it is not connected (reconnecting, its runtime gone),
//!   commands go through the shared pool. So no command waits for a local connection.
//! - A client is opened again only when its connection task has ended (its runtime shut down),
//!   never while it is reconnecting: an outage does not open a client per command.
//! - Every live client is kept here too, so `quit` and drop close them and `connection_ids`
//!   lists them; after `quit` no new one is opened.

use std::{
    cell::RefCell,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use fred::{
    prelude::{Builder, Client, ClientLike},
    types::ConnectHandle,
};

/// Tells the caches of a process apart in the per-thread table.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's clients, one per cache that sent a command from it.
    static THREAD_CLIENTS: RefCell<Vec<Arc<Opened>>> = const { RefCell::new(Vec::new()) };
}

/// A client opened on one thread for one cache.
struct Opened {
    owner: u64,
    client: Client,
    /// Ends when the client quits or its runtime shuts down.
    task: ConnectHandle,
}

impl Opened {
    fn is_live(&self) -> bool {
        !self.task.is_finished()
    }
}

/// The per-thread clients of one cache.
pub(crate) struct LocalClients {
    owner: u64,
    builder: Builder,
    opened: Mutex<Vec<Arc<Opened>>>,
    closed: AtomicBool,
}

impl LocalClients {
    /// Clients built like the pool's, from `builder`.
    pub(crate) fn new(builder: Builder) -> Arc<LocalClients> {
        Arc::new(LocalClients {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            builder,
            opened: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// This thread's client when it is connected; `None` sends the command through the pool.
    /// Opens the thread's client when it has none (outside a Tokio runtime, never).
    pub(crate) fn current(&self) -> Option<Client> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        THREAD_CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            // Clients of caches that quit, or of runtimes that are gone, are done for.
            clients.retain(|c| c.is_live());
            if let Some(mine) = clients.iter().find(|c| c.owner == self.owner) {
                return mine.client.is_connected().then(|| mine.client.clone());
            }
            if let Some(opened) = self.open() {
                clients.push(opened);
            }
            None
        })
    }

    /// Opens a client whose connection task runs on the current runtime, if there is one.
    fn open(&self) -> Option<Arc<Opened>> {
        // Only here, not on every command: `try_current` clones the runtime's handle.
        tokio::runtime::Handle::try_current().ok()?;
        let client = match self.builder.build() {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "cannot open a per-thread redis client; using the pool");
                return None;
            }
        };
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock `close` takes, so no client opens after `close` has run.
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        opened.retain(|c| c.is_live());
        let task = client.connect();
        let fresh = Arc::new(Opened {
            owner: self.owner,
            client,
            task,
        });
        opened.push(fresh.clone());
        Some(fresh)
    }

    /// The clients whose connection task still runs.
    pub(crate) fn live(&self) -> Vec<Client> {
        let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        opened
            .iter()
            .filter(|c| c.is_live())
            .map(|c| c.client.clone())
            .collect()
    }

    /// Stops opening clients and hands back the live ones, for the caller to quit.
    pub(crate) fn close(&self) -> Vec<Client> {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut *opened)
            .into_iter()
            .filter(|c| c.is_live())
            .map(|c| c.client.clone())
            .collect()
    }
}
