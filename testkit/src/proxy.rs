//! A TCP proxy on 127.0.0.1 between dtx and a server it needs (Redis, a
//! branch service) that a test makes misbehave on a schedule: delay every
//! chunk, hold every byte (a half-open peer: connected, silent), refuse
//! new connections, or reset every open one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Hold every chunk this long before forwarding it.
    Delay(Duration),
    /// Keep connections open and forward nothing until the fault ends
    /// (each direction holds the chunk it read; then everything goes
    /// through, in order).
    Hold,
    /// Reset every new connection at once; open ones go on.
    Refuse,
}

struct Shared {
    fault: watch::Sender<Fault>,
    /// Bumped by [`FaultProxy::reset_all`]; each connection resets when it
    /// changes.
    resets: watch::Sender<u64>,
    accepted: AtomicU64,
}

/// The proxy; when dropped it stops accepting and resets every open
/// connection.
pub struct FaultProxy {
    /// The port it listens on.
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `127.0.0.1:target`, passing everything.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            fault: watch::channel(Fault::Pass).0,
            resets: watch::channel(0).0,
            accepted: AtomicU64::new(0),
        });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    if *shared.fault.borrow() == Fault::Refuse {
                        let _ = client.set_zero_linger();
                        continue;
                    }
                    tokio::spawn(connection(client, target, Arc::clone(&shared)));
                }
            }
        });
        Self { port, shared, task }
    }

    /// Changes how traffic is treated from now on.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// Resets (RST) every open connection.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Runs `steps` (a fault, then how long it lasts, ms) one after the
    /// other, resetting every open connection after each when
    /// `reset_after`; passes everything again at the end.
    pub async fn run(&self, steps: &[(Fault, u64)], reset_after: bool) {
        for (fault, ms) in steps {
            self.set(*fault);
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            if reset_after {
                self.reset_all();
            }
        }
        self.set(Fault::Pass);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

/// One proxied connection: two pumps until either side closes, or a
/// reset (zero linger turns the close into a RST on both sides).
async fn connection(mut client: TcpStream, target: u16, shared: Arc<Shared>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            _ = pump(client_read, server_write, shared.fault.subscribe()) => false,
            _ = pump(server_read, client_write, shared.fault.subscribe()) => false,
            _ = resets.changed() => true,
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Copies `from` to `to` under the current fault, until `from` closes or
/// a write fails.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, mut fault: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *fault.borrow_and_update();
            match now {
                Fault::Pass | Fault::Refuse => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Hold => {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
