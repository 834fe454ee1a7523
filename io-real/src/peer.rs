//! Peer transport: length-prefixed frames over TCP, one outbound connection per peer.
//!
//! Frames are `u32 LE length` + a body that `core::msgcodec` encodes and decodes; this module only
//! moves bytes. Each peer has a bounded queue and a writer task that reconnects with exponential
//! backoff; whatever cannot be sent is reported back, with what the frame carried, so the node
//! can act on it (raft's `report_unreachable`, a snapshot transfer's go-back, a forwarded request
//! answered at once as not applied). Inbound connections are read by one task each;
//! the event loop closes a connection whose frame the node rejected.

use crate::server::Input;
use raftkv_core::node::FrameKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What became of an outbound message.
#[derive(Debug)]
pub struct SendReport {
    pub to: u64,
    pub kind: FrameKind,
    pub delivered: bool,
}

struct PeerSender {
    addr: String,
    tx: mpsc::Sender<(Vec<u8>, FrameKind)>,
}

pub struct Peers {
    max_frame_bytes: usize,
    queue_len: usize,
    senders: HashMap<u64, PeerSender>,
    inputs: mpsc::Sender<Input>,
    conns: Arc<Mutex<HashMap<u64, Arc<Notify>>>>,
}

impl Peers {
    pub fn new(max_frame_bytes: usize, queue_len: usize, inputs: mpsc::Sender<Input>) -> Self {
        Peers {
            max_frame_bytes,
            queue_len,
            senders: HashMap::new(),
            inputs,
            conns: Arc::default(),
        }
    }

    /// Queues a frame for `to` at `addr`; false if it was dropped (queue full or too large).
    pub fn send(&mut self, to: u64, addr: &str, bytes: Vec<u8>, kind: FrameKind) -> bool {
        if bytes.len() > self.max_frame_bytes {
            tracing::error!(
                to,
                size_bytes = bytes.len(),
                max_frame_bytes = self.max_frame_bytes,
                "message exceeds --max-frame-bytes; dropped"
            );
            return false;
        }
        let stale = self
            .senders
            .get(&to)
            .is_some_and(|s| s.addr != addr || s.tx.is_closed());
        if stale {
            self.senders.remove(&to);
        }
        let sender = self.senders.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.queue_len);
            tokio::spawn(writer(to, addr.to_string(), rx, self.inputs.clone()));
            PeerSender {
                addr: addr.to_string(),
                tx,
            }
        });
        sender.tx.try_send((bytes, kind)).is_ok()
    }

    /// Closes an inbound connection (after the node rejected one of its frames).
    pub fn close_conn(&self, conn_id: u64) {
        if let Some(n) = self.conns.lock().expect("conns lock").remove(&conn_id) {
            n.notify_one();
        }
    }

    /// Accepts peer connections on `listener` forever.
    pub fn spawn_listener(&self, listener: TcpListener) {
        let inputs = self.inputs.clone();
        let conns = self.conns.clone();
        let max = self.max_frame_bytes;
        tokio::spawn(async move {
            let next_id = AtomicU64::new(1);
            loop {
                match listener.accept().await {
                    Ok((stream, from)) => {
                        let conn_id = next_id.fetch_add(1, Ordering::Relaxed);
                        let close = Arc::new(Notify::new());
                        conns
                            .lock()
                            .expect("conns lock")
                            .insert(conn_id, close.clone());
                        let (inputs, conns) = (inputs.clone(), conns.clone());
                        tokio::spawn(async move {
                            if let Err(e) = reader(conn_id, stream, inputs, close, max).await {
                                tracing::debug!(%from, error = %e, "peer connection closed");
                            }
                            conns.lock().expect("conns lock").remove(&conn_id);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                }
            }
        });
    }
}

/// The wait before the next connection attempt after one more failure: doubling from
/// `BACKOFF_MIN`, never past `BACKOFF_MAX`, so a dead peer costs a connect every 2 s at most and a
/// restarted one is found again within 2 s.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

async fn reader(
    conn_id: u64,
    stream: TcpStream,
    inputs: mpsc::Sender<Input>,
    close: Arc<Notify>,
    max: usize,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // Under load a peer sends many frames back to back; read them with one syscall, not two each.
    let mut stream = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    loop {
        let mut len = [0u8; 4];
        tokio::select! {
            r = stream.read_exact(&mut len) => { r?; }
            _ = close.notified() => return Ok(()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            tracing::warn!(
                conn_id,
                size_bytes = len,
                max_frame_bytes = max,
                "peer frame too large; closing connection"
            );
            return Ok(());
        }
        let mut body = vec![0u8; len];
        tokio::select! {
            r = stream.read_exact(&mut body) => { r?; }
            _ = close.notified() => return Ok(()),
        }
        if inputs
            .send(Input::Peer {
                conn_id,
                bytes: body,
            })
            .await
            .is_err()
        {
            return Ok(()); // shutting down
        }
    }
}

async fn writer(
    to: u64,
    addr: String,
    mut rx: mpsc::Receiver<(Vec<u8>, FrameKind)>,
    inputs: mpsc::Sender<Input>,
) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = Instant::now();
    let report = |kind: FrameKind, delivered: bool| {
        let inputs = inputs.clone();
        async move {
            let _ = inputs
                .send(Input::SendReport(SendReport {
                    to,
                    kind,
                    delivered,
                }))
                .await;
        }
    };
    while let Some((bytes, kind)) = rx.recv().await {
        if conn.is_none() {
            if Instant::now() < retry_at {
                report(kind, false).await;
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(BufWriter::new(s));
                    backoff = BACKOFF_MIN;
                }
                _ => {
                    retry_at = Instant::now() + backoff;
                    backoff = next_backoff(backoff);
                    report(kind, false).await;
                    continue;
                }
            }
        }
        let w = conn.as_mut().expect("connected above");
        let mut ok = w
            .write_all(&(bytes.len() as u32).to_le_bytes())
            .await
            .is_ok()
            && w.write_all(&bytes).await.is_ok();
        // Flush when the queue is momentarily empty (batches frames under load).
        if ok && rx.is_empty() {
            ok = w.flush().await.is_ok();
        }
        if !ok {
            conn = None;
            retry_at = Instant::now() + backoff;
            backoff = next_backoff(backoff);
            report(kind, false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind() -> FrameKind {
        FrameKind::Other
    }

    async fn next_input(rx: &mut mpsc::Receiver<Input>) -> Input {
        rx.recv().await.expect("inputs open")
    }

    async fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let mut d = BACKOFF_MIN;
        let mut seen = vec![d];
        while d < BACKOFF_MAX {
            d = next_backoff(d);
            seen.push(d);
        }
        assert_eq!(seen[1], BACKOFF_MIN * 2);
        assert_eq!(*seen.last().unwrap(), BACKOFF_MAX);
        assert_eq!(seen.len(), 7, "{seen:?}"); // 50, 100, 200, 400, 800, 1600 ms, 2 s
        assert_eq!(next_backoff(BACKOFF_MAX), BACKOFF_MAX);
        assert_eq!(next_backoff(Duration::ZERO), BACKOFF_MIN);
    }

    /// Frames written by one node's sender arrive whole, in order and unchanged at another's
    /// listener, over a real loopback connection.
    #[tokio::test]
    async fn frames_cross_a_loopback_connection_whole_and_in_order() {
        let (rx_inputs_tx, mut rx_inputs) = mpsc::channel(64);
        let receiver = Peers::new(1 << 20, 16, rx_inputs_tx);
        let (l, addr) = listener().await;
        receiver.spawn_listener(l);
        let (tx_inputs_tx, mut tx_inputs) = mpsc::channel(64);
        let mut sender = Peers::new(1 << 20, 16, tx_inputs_tx);
        let frames: Vec<Vec<u8>> = vec![
            b"one".to_vec(),
            Vec::new(),
            (0..200_000u32).map(|i| i as u8).collect(),
            b"four".to_vec(),
        ];
        for f in &frames {
            assert!(sender.send(2, &addr, f.clone(), kind()));
        }
        let mut conn = None;
        for want in &frames {
            match next_input(&mut rx_inputs).await {
                Input::Peer { conn_id, bytes } => {
                    assert_eq!(&bytes, want);
                    assert_eq!(*conn.get_or_insert(conn_id), conn_id, "one connection");
                }
                _ => panic!("not a frame"),
            }
        }
        // Only failures are reported: what was handed over counts as sent.
        assert!(tx_inputs.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_at_both_ends() {
        let (inputs, _rx) = mpsc::channel(8);
        let mut peers = Peers::new(100, 16, inputs);
        // Sending: refused at once, never queued.
        assert!(!peers.send(2, "127.0.0.1:1", vec![0; 101], kind()));
        assert!(peers.senders.is_empty());
        // Receiving: a length prefix over the limit closes the connection unread.
        let (l, addr) = listener().await;
        peers.spawn_listener(l);
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&101u32.to_le_bytes()).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).await.unwrap(), 0, "closed by the reader");
    }

    /// A full queue refuses the frame (`send` is false: the event loop reports it to the node
    /// as not sent); what was queued still goes out.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_the_frame() {
        let (l, addr) = listener().await;
        let (inputs, mut rx) = mpsc::channel(64);
        let mut peers = Peers::new(1 << 20, 2, inputs);
        peers.spawn_listener(l);
        // The writer task cannot run before this task awaits (one thread): the queue holds 2.
        assert!(peers.send(2, &addr, b"a".to_vec(), kind()));
        assert!(peers.send(2, &addr, b"b".to_vec(), kind()));
        assert!(
            !peers.send(2, &addr, b"c".to_vec(), kind()),
            "queue of 2 is full"
        );
        let mut frames = Vec::new();
        while frames.len() < 2 {
            match next_input(&mut rx).await {
                Input::Peer { bytes, .. } => frames.push(bytes),
                _ => panic!("unexpected input"),
            }
        }
        assert_eq!(frames, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    /// A peer nobody listens for: each frame is reported undelivered (raft's unreachable, a
    /// forwarded request answered at once), none is lost without a report.
    #[tokio::test]
    async fn an_unreachable_peer_is_reported_undelivered() {
        let (l, addr) = listener().await;
        drop(l);
        let (inputs, mut rx) = mpsc::channel(64);
        let mut peers = Peers::new(1 << 20, 16, inputs);
        assert!(peers.send(3, &addr, b"x".to_vec(), kind()));
        assert!(peers.send(3, &addr, b"y".to_vec(), kind()));
        for _ in 0..2 {
            match next_input(&mut rx).await {
                Input::SendReport(r) => assert!(!r.delivered && r.to == 3, "{r:?}"),
                _ => panic!("not a report"),
            }
        }
    }

    /// The event loop closes an inbound connection whose frame the node rejected.
    #[tokio::test]
    async fn close_conn_closes_that_connection() {
        let (inputs, mut rx) = mpsc::channel(8);
        let peers = Peers::new(1 << 20, 16, inputs);
        let (l, addr) = listener().await;
        peers.spawn_listener(l);
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&3u32.to_le_bytes()).await.unwrap();
        s.write_all(b"bad").await.unwrap();
        let conn_id = match next_input(&mut rx).await {
            Input::Peer { conn_id, bytes } => {
                assert_eq!(bytes, b"bad");
                conn_id
            }
            _ => panic!("not a frame"),
        };
        peers.close_conn(conn_id);
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).await.unwrap(), 0, "closed");
        assert!(peers.conns.lock().unwrap().is_empty());
    }
}
