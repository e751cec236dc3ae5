//! Unit tests of the accept loop and the connection policies, under paused
//! time: connections are in-memory pipes a scripted listener hands to
//! [`serve`], an HTTP/2 client (hyper's) at the other end; every byte the
//! server sends is kept, to find its GOAWAY frames; a service stands in for
//! the gateway's and admits a call when it carries `x-admit`, as the token
//! check does.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use http_body_util::BodyExt as _;
use hyper::client::conn::http2::SendRequest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

use super::*;
use crate::captured_log::CapturedLog;
use crate::server::connections::{Call, OpenCallsLayer};

const DEADLINES: Deadlines = Deadlines {
    handshake: Duration::from_secs(10),
    idle: Duration::from_secs(60),
};

/// The HTTP/2 frame type of a GOAWAY.
const GOAWAY: u8 = 0x7;

type Incoming = io::Result<(DuplexStream, Peer)>;

/// A listener whose connections (or failures) the test hands in.
struct Scripted(tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>);

impl Accept for Scripted {
    type Io = DuplexStream;

    async fn next_connection(&self) -> io::Result<(DuplexStream, Peer)> {
        match self.0.lock().await.recv().await {
            Some(next) => next,
            None => std::future::pending().await,
        }
    }
}

/// The server under test.
struct Server {
    listener: mpsc::UnboundedSender<Incoming>,
    stop: CancellationToken,
    served: JoinHandle<Result<(), ServeError>>,
    /// Lets the calls to `/slow` answer.
    release: watch::Sender<bool>,
}

impl Server {
    fn start(places: Places) -> Server {
        Server::start_with(places, DEADLINES)
    }

    fn start_with(places: Places, deadlines: Deadlines) -> Server {
        let (listener, incoming) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let service = ServiceBuilder::new()
            .layer(OpenCallsLayer)
            .service(tower::service_fn(move |request| {
                answer(request, released.clone())
            }));
        let settings = Arc::new(ConnectionSettings {
            http2: http2_settings(16),
            tls: None,
            deadlines,
        });
        let stop = CancellationToken::new();
        let listener_side = Scripted(tokio::sync::Mutex::new(incoming));
        let served = tokio::spawn(serve(
            listener_side,
            places,
            settings,
            service,
            stop.clone(),
        ));
        Server {
            listener,
            stop,
            served,
            release,
        }
    }

    /// A connection from `peer` that sends nothing: the test's end of it.
    fn connect_silently(&self, peer: Peer) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        self.listener.send(Ok((theirs, peer))).unwrap();
        ours
    }

    /// An HTTP/2 client connected from `peer` (whether the loop has taken
    /// its connection yet or not).
    async fn connect(&self, peer: Peer) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        self.listener.send(Ok((theirs, peer))).unwrap();
        Client::over(ours).await
    }

    fn fail_accept(&self, errno: Errno) {
        let err = io::Error::from_raw_os_error(errno.raw_os_error());
        self.listener.send(Err(err)).unwrap();
    }
}

/// The service: `/slow` answers once released; `x-admit` admits the call.
async fn answer(
    request: http::Request<Body>,
    mut released: watch::Receiver<bool>,
) -> Result<http::Response<String>, Infallible> {
    if request.headers().contains_key("x-admit") {
        let call = request
            .extensions()
            .get::<Call>()
            .expect("every request has a call");
        call.admit();
    }
    if request.uri().path() == "/slow" {
        let _ = released.wait_for(|released| *released).await;
    }
    Ok(http::Response::new("ok".to_owned()))
}

/// An HTTP/2 client, with a relay in front of it that keeps what the
/// server sends and can hold it back (as if it were still on its way).
struct Client {
    sender: SendRequest<String>,
    ended: JoinHandle<hyper::Result<()>>,
    received: Arc<Mutex<Vec<u8>>>,
    deliver: watch::Sender<bool>,
}

impl Client {
    async fn over(io: DuplexStream) -> Client {
        let (client_io, relay) = tokio::io::duplex(1 << 16);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (deliver, delivering) = watch::channel(true);
        let (mut from_client, mut to_client) = tokio::io::split(relay);
        let (mut from_server, mut to_server) = tokio::io::split(io);
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
            let _ = to_server.shutdown().await;
        });
        let kept = Arc::clone(&received);
        tokio::spawn(async move {
            let mut delivering = delivering;
            let mut buffer = vec![0u8; 1 << 16];
            while let Ok(read @ 1..) = from_server.read(&mut buffer).await {
                kept.lock().unwrap().extend_from_slice(&buffer[..read]);
                let _ = delivering.wait_for(|deliver| *deliver).await;
                if to_client.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
            let _ = to_client.shutdown().await;
        });
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(client_io))
            .await
            .unwrap();
        Client {
            sender,
            ended: tokio::spawn(connection),
            received,
            deliver,
        }
    }

    /// Calls `path` (admitted or not) in its own task; answers its body.
    fn call(&self, path: &str, admit: bool) -> JoinHandle<hyper::Result<String>> {
        let mut request = http::Request::builder().uri(format!("http://gateway{path}"));
        if admit {
            request = request.header("x-admit", "1");
        }
        let request = request.body(String::new()).unwrap();
        let mut sender = self.sender.clone();
        tokio::spawn(async move {
            let response = sender.send_request(request).await?;
            let body = response.into_body().collect().await?.to_bytes();
            Ok(String::from_utf8(body.to_vec()).unwrap())
        })
    }

    async fn answer(&self, path: &str, admit: bool) -> String {
        self.call(path, admit).await.unwrap().unwrap()
    }

    /// Whether the server has sent a GOAWAY on this connection.
    fn got_goaway(&self) -> bool {
        frame_types(&self.received.lock().unwrap()).contains(&GOAWAY)
    }

    /// Waits until the server has ended the connection.
    async fn ended(self) {
        let _ = self.ended.await.unwrap();
        drop(self.sender);
    }

    /// Closes the connection from this end.
    async fn close(self) {
        drop(self.sender);
        let _ = self.ended.await.unwrap();
    }
}

/// The type of each HTTP/2 frame in `bytes` (what a server sends: frames
/// only, no preface).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

fn peer(last: u8) -> Peer {
    Peer::of(SocketAddr::from(([10, 0, 0, last], 40000)))
}

/// Lets every task run until all wait on the clock.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_handshake_deadline() {
    let server = Server::start(Places::new(1, None));
    let started = Instant::now();
    let mut silent = server.connect_silently(peer(1));
    let client = server.connect(peer(2)).await;
    let call = client.call("/", true);
    tokio::time::sleep(DEADLINES.handshake / 2).await;
    assert!(
        !call.is_finished(),
        "the silent connection holds the only place"
    );
    let mut sent = Vec::new();
    silent.read_to_end(&mut sent).await.unwrap();
    assert!(started.elapsed() >= DEADLINES.handshake);
    // Its place went to the client, whose call is answered.
    assert_eq!(call.await.unwrap().unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_calls_are_all_refused_is_closed_with_a_goaway() {
    let server = Server::start(Places::new(4, None));
    let started = Instant::now();
    let client = server.connect(peer(1)).await;
    // Answered (the token check would refuse them), but not admitted.
    for _ in 0..4 {
        assert_eq!(client.answer("/", false).await, "ok");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(client.got_goaway());
    client.ended().await;
    assert!(started.elapsed() >= DEADLINES.handshake);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_gets_a_goaway_and_a_call_crossing_it_completes() {
    let server = Server::start(Places::new(4, None));
    let client = server.connect(peer(1)).await;
    assert_eq!(client.answer("/", true).await, "ok");
    let last_call = Instant::now();
    tokio::time::sleep(DEADLINES.idle - Duration::from_secs(1)).await;
    assert!(!client.got_goaway(), "a GOAWAY before the idle timeout");
    // From now on the client does not see what the server sends yet.
    client.deliver.send_replace(false);
    tokio::time::sleep_until(last_call + DEADLINES.idle + Duration::from_millis(10)).await;
    assert!(client.got_goaway(), "no GOAWAY once idle");
    // A call the client sends now crosses the GOAWAY on the wire.
    let crossing = client.call("/slow", true);
    settle().await;
    client.deliver.send_replace(true);
    // It runs as long as it takes: the connection stays open meanwhile.
    tokio::time::sleep(CLOSING_GRACE * 5).await;
    assert!(!crossing.is_finished() && !client.ended.is_finished());
    server.release.send_replace(true);
    assert_eq!(crossing.await.unwrap().unwrap(), "ok");
    client.ended().await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_idle_from_its_last_call_even_before_its_handshake_deadline() {
    let deadlines = Deadlines {
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(1),
    };
    let server = Server::start_with(Places::new(4, None), deadlines);
    let started = Instant::now();
    let client = server.connect(peer(1)).await;
    assert_eq!(client.answer("/", true).await, "ok");
    client.ended().await;
    let closed_after = started.elapsed();
    assert!(closed_after >= deadlines.idle && closed_after < deadlines.handshake);
}

#[tokio::test(start_paused = true)]
async fn a_peer_past_its_share_is_closed_at_once_and_others_are_not() {
    let server = Server::start(Places::new(8, NonZeroUsize::new(1)));
    let first = server.connect(peer(1)).await;
    assert_eq!(first.answer("/", true).await, "ok");
    // Closed before a byte of HTTP/2 (an accepted one gets the server's
    // SETTINGS at once).
    let mut second = server.connect_silently(peer(1));
    let mut sent = Vec::new();
    second.read_to_end(&mut sent).await.unwrap();
    assert!(sent.is_empty());
    let other = server.connect(peer(2)).await;
    assert_eq!(other.answer("/", true).await, "ok");
    // Once the first has gone, its peer may connect again.
    first.close().await;
    settle().await;
    let again = server.connect(peer(1)).await;
    assert_eq!(again.answer("/", true).await, "ok");
}

#[tokio::test(start_paused = true)]
async fn stopping_sends_every_connection_a_goaway_and_lets_calls_finish() {
    let server = Server::start(Places::new(4, None));
    let idle = server.connect(peer(1)).await;
    let busy = server.connect(peer(2)).await;
    assert_eq!(idle.answer("/", true).await, "ok");
    let running = busy.call("/slow", true);
    settle().await;
    server.stop.cancel();
    idle.ended().await;
    assert!(busy.got_goaway());
    // The running call keeps its connection, and the server, going.
    tokio::time::sleep(CLOSING_GRACE * 5).await;
    assert!(!running.is_finished() && !server.served.is_finished());
    server.release.send_replace(true);
    assert_eq!(running.await.unwrap().unwrap(), "ok");
    busy.ended().await;
    server.served.await.unwrap().unwrap();
    // No connection is taken any more.
    assert!(server.listener.is_closed());
}

#[tokio::test(start_paused = true)]
async fn running_out_of_descriptors_is_logged_once_per_episode() {
    let (log, _logging) = CapturedLog::install();
    let server = Server::start(Places::new(4, None));
    for _ in 0..50 {
        server.fail_accept(Errno::MFILE);
    }
    server.fail_accept(Errno::CONNABORTED);
    let client = server.connect(peer(1)).await;
    assert_eq!(client.answer("/", true).await, "ok");
    assert_eq!(log.count("out of file descriptors"), 1);
    assert_eq!(log.count("accepting connections again"), 1);
    // A second episode is logged again.
    server.fail_accept(Errno::NFILE);
    let client = server.connect(peer(2)).await;
    assert_eq!(client.answer("/", true).await, "ok");
    assert_eq!(log.count("out of file descriptors"), 2);
    // A listener that cannot accept at all stops the server.
    server.fail_accept(Errno::BADF);
    let stopped = server.served.await.unwrap();
    assert!(matches!(stopped, Err(ServeError::Accept(_))));
}
