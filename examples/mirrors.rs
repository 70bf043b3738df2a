//! Fetching from mirrors over real TCP sockets: cancelled branches close their connections.
//!
//! The program starts its own small "mirror" servers on 127.0.0.1, each with its own latency,
//! speaking a one-line protocol: the client sends `GET <file>`, the server waits out its
//! latency and answers `OK <content>` (or `ERR <reason>`). Every server counts the requests it
//! answered and the connections the client closed before the answer was written: that count is
//! how a cancelled branch becomes visible from the other end of the wire.
//!
//! 1. `policy = race_ok, timeout = ...`: the same file from four mirrors (300 ms, 80 ms,
//!    150 ms, and a broken one that answers an error at once). The fastest healthy mirror
//!    wins, and the two slower ones see their connection closed by the client: the losers
//!    were cancelled, not left running.
//! 2. The dynamic form with `limit = 8`: fifty files from one mirror, never more than eight
//!    requests in flight, and the pages come back in input order whatever order they were
//!    answered in.
//! 3. `timeout = ...` with a mirror too slow for the deadline: `Error::TimedOut` names the
//!    branches that were still pending, and that mirror sees their connections closed.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --example mirrors
//! ```
//!
//! The whole run takes about a second.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gather::{Error, gather};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::time::sleep;

/// What a mirror server counts. The client side only reads these, to tell the story.
#[derive(Default)]
struct Stats {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Requests answered (`OK` or `ERR` written).
    answered: AtomicUsize,
    /// Connections the client closed before the answer was written.
    closed_early: AtomicUsize,
    /// Requests accepted and not answered yet, and the most there ever were at once.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// A mirror server: a blocking `std::net` listener served from its own threads.
struct Mirror {
    name: &'static str,
    latency: Duration,
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    accept_thread: JoinHandle<()>,
}

/// How a mirror behaves.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    /// How long the mirror takes before it answers.
    latency: Duration,
    /// Added to the latency 0 to 3 times, depending on the file name, so that answers to
    /// requests sent together are written out of order.
    jitter: Duration,
    /// Answer `ERR` instead of `OK`.
    broken: bool,
}

impl Spec {
    fn new(name: &'static str, latency_ms: u64) -> Self {
        Spec {
            name,
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::ZERO,
            broken: false,
        }
    }

    fn delay(&self, file: &str) -> Duration {
        let steps = file.bytes().map(u32::from).sum::<u32>() % 4;
        self.latency + self.jitter * steps
    }
}

impl Mirror {
    fn start(spec: Spec) -> io::Result<Mirror> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let accept_thread = thread::spawn({
            let (stats, stop) = (stats.clone(), stop.clone());
            move || {
                let mut handlers = Vec::new();
                // The loop ends when `shutdown` sets `stop` and connects once to wake it.
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    stats.accepted.fetch_add(1, Ordering::SeqCst);
                    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
                    let stats = stats.clone();
                    handlers.push(thread::spawn(move || serve(spec, stream, &stats)));
                }
                for handler in handlers {
                    handler.join().expect("mirror connection thread panicked");
                }
            }
        });
        Ok(Mirror {
            name: spec.name,
            latency: spec.latency,
            addr,
            stats,
            stop,
            accept_thread,
        })
    }

    fn count(&self, counter: impl Fn(&Stats) -> &AtomicUsize) -> usize {
        counter(&self.stats).load(Ordering::SeqCst)
    }

    /// Waits until every connection this mirror accepted has ended, answered or closed by
    /// the client, so the counts read next are final rather than a guess about timing.
    async fn quiet(&self) {
        let ended = || self.count(|s| &s.answered) + self.count(|s| &s.closed_early);
        while ended() < self.count(|s| &s.accepted) {
            sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops accepting, and returns once every connection thread has ended.
    fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        self.accept_thread
            .join()
            .expect("mirror accept thread panicked");
    }
}

/// One connection, on its own thread: read `GET <file>`, wait, answer.
fn serve(spec: Spec, stream: TcpStream, stats: &Stats) {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    let read = reader.read_line(&mut request);
    let file = request.trim_end().strip_prefix("GET ").unwrap_or("?");
    let delay = spec.delay(file);
    let answer = if spec.broken {
        format!("ERR {} cannot read {file}: disk failure\n", spec.name)
    } else {
        format!(
            "OK {file} from {} after {} ms\n",
            spec.name,
            delay.as_millis()
        )
    };
    let stream = reader.get_mut();
    let closed = !matches!(read, Ok(n) if n > 0) || client_closed_within(stream, delay);
    // Out of flight before the answer is written: once the client has read it, it may open
    // its next connection, and that one must not be counted alongside this one.
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    if !closed && stream.write_all(answer.as_bytes()).is_ok() {
        stats.answered.fetch_add(1, Ordering::SeqCst);
    } else {
        stats.closed_early.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits out `wait`, watching the socket: a read that sees end-of-file (or a reset) means the
/// client closed the connection. The client sends nothing after its request line.
fn client_closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut [0; 64]) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// A page fetched from a mirror: the answer's content after `OK `.
#[derive(Debug)]
struct Page {
    mirror: &'static str,
    content: String,
}

/// The client: `GET <file>`, then one line of answer, on tokio's sockets.
///
/// The branch is suspended at each `.await`; a cancelled branch is dropped there, which drops
/// the socket and closes the connection, so the server sees end-of-file.
async fn fetch(mirror: &Mirror, file: impl AsRef<str>) -> io::Result<Page> {
    let mut stream = tokio::net::TcpStream::connect(mirror.addr).await?;
    stream
        .write_all(format!("GET {}\n", file.as_ref()).as_bytes())
        .await?;
    let mut answer = String::new();
    if tokio::io::BufReader::new(stream)
        .read_line(&mut answer)
        .await?
        == 0
    {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let answer = answer.trim_end();
    match answer.strip_prefix("OK ") {
        Some(content) => Ok(Page {
            mirror: mirror.name,
            content: content.to_owned(),
        }),
        None => Err(io::Error::other(answer)),
    }
}

/// Act 1: the fastest healthy mirror wins; the others are cancelled and hang up.
async fn race_mirrors(mirrors: &[Mirror; 4]) {
    println!("== Act 1: gather!(policy = race_ok, timeout = 2 s; ...) over four mirrors ==");
    let [eu, us, asia, broken] = mirrors;
    for m in mirrors {
        let ms = m.latency.as_millis();
        println!("  {:<6} on {}, answers after {ms} ms", m.name, m.addr);
    }
    let started = Instant::now();
    // Every branch connects and sends its request at its first poll. `broken` fails first;
    // `race_ok` waits for the next outcome. The first success wins, and `gather!` drops the
    // branches still waiting, which closes their sockets, before it returns.
    let won = gather!(policy = race_ok, timeout = Duration::from_secs(2);
        eu = fetch(eu, "index.html"),
        us = fetch(us, "index.html"),
        asia = fetch(asia, "index.html"),
        broken = fetch(broken, "index.html"),
    );
    let elapsed = started.elapsed().as_millis();
    match won {
        Ok(page) => println!("Won by {} in {elapsed} ms: {}", page.mirror, page.content),
        Err(e) => println!("No mirror answered: {e}"),
    }
    for m in mirrors {
        m.quiet().await;
    }
    println!("(broken answered `ERR` first; race_ok kept waiting for a success)");
    println!("What each mirror saw:");
    for m in mirrors {
        println!(
            "  {:<6} answered {}, closed by the client before the answer: {}",
            m.name,
            m.count(|s| &s.answered),
            m.count(|s| &s.closed_early),
        );
    }
    println!();
}

/// Act 2: fifty files from one mirror, at most eight at a time, results in input order.
async fn fetch_many(bulk: &Mirror) {
    const LIMIT: usize = 8;
    println!("== Act 2: gather!(policy = cancel, limit = {LIMIT}; for i in 0..50 => ...) ==");
    let started = Instant::now();
    // One branch per item; each starts (and connects) only when one of the eight slots is free.
    let pages = gather!(policy = cancel, limit = LIMIT;
        for i in 0..50 => fetch(bulk, format!("file-{i}"))
    );
    let elapsed = started.elapsed().as_millis();
    let pages = match pages {
        Ok(pages) => pages,
        Err(e) => {
            println!("Failed: {e}");
            return;
        }
    };
    println!("Fetched {} files in {elapsed} ms:", pages.len());
    for page in &pages[..4] {
        println!("  {}", page.content);
    }
    println!("  ...");
    // Each answer starts with its file name: check that page i is file-i.
    let in_order = pages
        .iter()
        .enumerate()
        .all(|(i, page)| page.content.starts_with(&format!("file-{i} ")));
    println!("In input order (page i is file-i for every i), not answer order: {in_order}");
    bulk.quiet().await;
    let peak = bulk.count(|s| &s.peak_in_flight);
    println!(
        "{} saw {} connections, at most {peak} in flight at once (limit = {LIMIT})",
        bulk.name,
        bulk.count(|s| &s.accepted),
    );
    assert!(in_order && peak <= LIMIT);
    println!();
}

/// Act 3: a deadline that one mirror is too slow for.
async fn too_slow(us: &Mirror, glacial: &Mirror) {
    println!("== Act 3: gather!(policy = cancel, timeout = 500 ms; ...) with a 1.5 s mirror ==");
    let closed_before = glacial.count(|s| &s.closed_early);
    let started = Instant::now();
    let fetched = gather!(policy = cancel, timeout = Duration::from_millis(500);
        page = fetch(us, "index.html"),
        video = fetch(glacial, "video.mp4"),
        archive = fetch(glacial, "archive.tar"),
    );
    let elapsed = started.elapsed().as_millis();
    match fetched {
        Ok((page, video, archive)) => println!("{page:?} {video:?} {archive:?}"),
        Err(Error::TimedOut { pending, .. }) => {
            let pending: Vec<&str> = pending.iter().map(|b| b.name()).collect();
            let pending = pending.join(", ");
            println!("Timed out after {elapsed} ms; cancelled while pending: {pending}");
        }
        Err(e) => println!("Failed: {e}"),
    }
    glacial.quiet().await;
    println!(
        "{} saw {} connections closed by the client before the answer",
        glacial.name,
        glacial.count(|s| &s.closed_early) - closed_before,
    );
    println!();
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let racers = [
        Mirror::start(Spec::new("eu", 300))?,
        Mirror::start(Spec::new("us", 80))?,
        Mirror::start(Spec::new("asia", 150))?,
        Mirror::start(Spec {
            broken: true,
            ..Spec::new("broken", 10)
        })?,
    ];
    let bulk = Mirror::start(Spec {
        jitter: Duration::from_millis(10),
        ..Spec::new("bulk", 20)
    })?;
    let glacial = Mirror::start(Spec::new("glacial", 1500))?;

    race_mirrors(&racers).await;
    fetch_many(&bulk).await;
    too_slow(&racers[1], &glacial).await;

    println!("== Totals, after every mirror has shut down ==");
    for m in racers.into_iter().chain([bulk, glacial]) {
        let (name, stats) = (m.name, m.stats.clone());
        m.shutdown();
        let count = |c: &AtomicUsize| c.load(Ordering::SeqCst);
        println!(
            "  {name:<7} accepted {:>2}, answered {:>2}, closed early by the client {}",
            count(&stats.accepted),
            count(&stats.answered),
            count(&stats.closed_early),
        );
    }
    Ok(())
}
