//! A TCP proxy a test can cut: the way to take a dependency away from one
//! process without disturbing the other tests that share the real service.
//! It can also lose answers: forward a request, then cut the connection as
//! the answer starts, so the service did the work and the client never
//! hears of it (a lost answer, the unknown outcome of a processor call).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    answers: Arc<Answers>,
}

/// The lose-answers mode: how many connections still lose their answer,
/// and how many have.
#[derive(Debug, Default)]
struct Answers {
    to_lose: AtomicUsize,
    lost: AtomicUsize,
}

impl Proxy {
    /// Listens on a free local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let answers = Arc::new(Answers::default());
        tokio::spawn(accept_loop(
            listener,
            target,
            up.clone(),
            connections.clone(),
            stop.clone(),
            answers.clone(),
        ));
        Ok(Self {
            addr,
            up,
            connections,
            stop,
            answers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones (they are accepted
    /// and closed at once, like a peer that went away).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut current = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// The next `n` connections forward what the client sends, and are cut
    /// as soon as the service starts to answer: the answer never reaches
    /// the client. Connections after those pass as usual. Open connections
    /// are closed first, so a client's next request (not one on a pooled
    /// keep-alive connection) is the one that loses its answer.
    pub fn lose_answers(&self, n: usize) {
        self.answers.to_lose.store(n, Ordering::SeqCst);
        let mut current = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        current.cancel();
        *current = CancellationToken::new();
    }

    /// How many answers this proxy has lost so far.
    pub fn answers_lost(&self) -> usize {
        self.answers.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    answers: Arc<Answers>,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut inbound, _)) = accepted else {
            continue;
        };
        if !up.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let token = connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let lose = answers
            .to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let answers = answers.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            if lose {
                let (mut from_client, _) = inbound.split();
                let (mut from_service, mut to_service) = outbound.split();
                let mut first = [0u8; 1];
                tokio::select! {
                    () = token.cancelled() => {}
                    _ = tokio::io::copy(&mut from_client, &mut to_service) => {}
                    read = tokio::io::AsyncReadExt::read(&mut from_service, &mut first) => {
                        if matches!(read, Ok(n) if n > 0) {
                            answers.lost.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                return;
            }
            tokio::select! {
                () = token.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}
