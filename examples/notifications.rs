//! The notification engine from the asyncio.gather seed ("How This Fails in Real Systems"),
//! fixed: one notification goes out by push, SMS and email at once, and every delivery is
//! recorded in an outbox table in SQLite, so that nothing is ever sent twice.
//!
//! The three providers are simulated: SMS answers after 20 ms, email after 35 ms, and push
//! after 60 ms with an API error on its first attempt (it succeeds when retried).
//!
//! 1. The broken engine: `tokio::try_join!` over the three deliveries, and the outbox written
//!    only after the join. The push error comes out of the join and skips that write: SMS and
//!    email were delivered but never recorded, so every retry of the engine sends them again.
//!    This act uses its own in-memory database.
//! 2. The fix: `gather!(policy = settle, spawn; push = ..., sms = ..., email = ...)`: each
//!    delivery runs on a tokio task of its own, behind an abort guard, and each branch claims
//!    its outbox row before it sends and records its outcome (sent, or failed with the error
//!    text) when it is done. The push failure stops nothing: every outcome is written.
//!    A channel already marked sent is skipped, a failed one is retried. The act ends by
//!    printing the outbox.
//!
//! The outbox of act 2 lives in `gather-notifications.sqlite3` in the temporary directory and
//! survives the run. Run the example twice: the first run records push as failed, the second
//! retries push (it succeeds) and skips SMS and email; any later run sends nothing.
//!
//! ```sh
//! cargo run --example notifications
//! cargo run --example notifications -- --reset   # delete the database first, start over
//! ```
//!
//! Deleting the database file by hand resets it too. Each run takes about 0.2 seconds.

use std::error::Error;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gather::gather;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::time::sleep;

/// The one notification both acts deliver.
#[derive(Clone, Copy)]
struct Notification {
    id: &'static str,
    text: &'static str,
}

const ORDER_SHIPPED: Notification = Notification {
    id: "order-1042-shipped",
    text: "Your order #1042 has shipped",
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Push,
    Sms,
    Email,
}

impl Channel {
    const ALL: [Channel; 3] = [Channel::Push, Channel::Sms, Channel::Email];

    fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that `{:<5}` aligns the names.
        f.pad(self.as_str())
    }
}

/// An error answered by a provider's API.
#[derive(Debug)]
struct ProviderError(String);

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for ProviderError {}

/// How many messages each provider delivered in this process, indexed like `Channel::ALL`:
/// what the customer's phone and inbox would count.
static DELIVERED: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];

fn delivered(channel: Channel) -> u32 {
    DELIVERED[channel as usize].load(Ordering::SeqCst)
}

/// A simulated provider API call. The push provider fails on the first attempt at a
/// notification and succeeds on any later one; SMS and email always succeed.
async fn provider_send(
    channel: Channel,
    notification: Notification,
    attempt: u32,
) -> Result<(), ProviderError> {
    let latency = match channel {
        Channel::Push => 60,
        Channel::Sms => 20,
        Channel::Email => 35,
    };
    sleep(Duration::from_millis(latency)).await;
    if channel == Channel::Push && attempt == 1 {
        println!("  {channel:<5} provider: API error");
        return Err(ProviderError(
            "push gateway answered 503 Service Unavailable".to_owned(),
        ));
    }
    DELIVERED[channel as usize].fetch_add(1, Ordering::SeqCst);
    println!(
        "  {channel:<5} provider: delivered \"{}\" (attempt {attempt})",
        notification.text
    );
    Ok(())
}

/// The outbox table: one row per (notification, channel).
///
/// `Connection` is `Send` but not `Sync`; the mutex makes the handle cheap to clone into each
/// branch. Every method holds the lock for one statement and never across an `.await`.
#[derive(Clone)]
struct Outbox {
    db: Arc<Mutex<Connection>>,
}

/// One row of the outbox, as printed.
struct OutboxRow {
    notification_id: String,
    channel: String,
    status: String,
    attempts: u32,
    error: Option<String>,
    updated_at: String,
}

/// SQLite's clock, in UTC, to the millisecond.
const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

impl Outbox {
    fn open(path: &Path) -> rusqlite::Result<Outbox> {
        Outbox::new(Connection::open(path)?)
    }

    fn in_memory() -> rusqlite::Result<Outbox> {
        Outbox::new(Connection::open_in_memory()?)
    }

    fn new(db: Connection) -> rusqlite::Result<Outbox> {
        // `sending`: claimed, provider not answered yet. A row left `sending` by a crash is
        // claimed again by the next run: at least once, never silently dropped.
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                notification_id TEXT NOT NULL,
                channel         TEXT NOT NULL,
                status          TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
                attempts        INTEGER NOT NULL,
                error           TEXT,
                updated_at      TEXT NOT NULL,
                PRIMARY KEY (notification_id, channel)
            )",
        )?;
        Ok(Outbox {
            db: Arc::new(Mutex::new(db)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.db
            .lock()
            .expect("a branch panicked while writing the outbox")
    }

    /// Before sending: marks the channel `sending` and counts the attempt, unless it is
    /// already `sent`. Returns the attempt number, or `None` if there is nothing to send.
    /// Check and claim are one statement: nothing can slip in between them.
    fn claim(&self, id: &str, channel: Channel) -> rusqlite::Result<Option<u32>> {
        let sql = format!(
            "INSERT INTO outbox (notification_id, channel, status, attempts, updated_at)
             VALUES (?1, ?2, 'sending', 1, {NOW})
             ON CONFLICT (notification_id, channel) DO UPDATE
                 SET status = 'sending', attempts = attempts + 1,
                     updated_at = excluded.updated_at
                 WHERE status <> 'sent'
             RETURNING attempts"
        );
        self.lock()
            .query_row(&sql, params![id, channel.as_str()], |row| row.get(0))
            .optional()
    }

    /// After sending: `sent`, or `failed` with the provider's error text.
    fn record(
        &self,
        id: &str,
        channel: Channel,
        outcome: &Result<(), ProviderError>,
    ) -> rusqlite::Result<()> {
        let (status, error) = match outcome {
            Ok(()) => ("sent", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        let sql = format!(
            "INSERT INTO outbox (notification_id, channel, status, attempts, error, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, {NOW})
             ON CONFLICT (notification_id, channel) DO UPDATE
                 SET status = excluded.status, error = excluded.error,
                     updated_at = excluded.updated_at"
        );
        self.lock()
            .execute(&sql, params![id, channel.as_str(), status, error])?;
        Ok(())
    }

    fn rows(&self) -> rusqlite::Result<Vec<OutboxRow>> {
        let db = self.lock();
        let mut query = db.prepare(
            "SELECT notification_id, channel, status, attempts, error, updated_at
             FROM outbox ORDER BY notification_id, rowid",
        )?;
        query
            .query_map([], |row| {
                Ok(OutboxRow {
                    notification_id: row.get(0)?,
                    channel: row.get(1)?,
                    status: row.get(2)?,
                    attempts: row.get(3)?,
                    error: row.get(4)?,
                    updated_at: row.get(5)?,
                })
            })?
            .collect()
    }

    fn sent_count(&self, id: &str) -> rusqlite::Result<u32> {
        self.lock().query_row(
            "SELECT count(*) FROM outbox WHERE notification_id = ?1 AND status = 'sent'",
            [id],
            |row| row.get(0),
        )
    }
}

/// Act 1: the engine from the seed, in Rust.
///
/// Nothing is written before the end, so as far as the outbox knows every run is the first
/// attempt.
async fn notify_the_old_way(outbox: &Outbox, n: Notification) -> Result<(), Box<dyn Error>> {
    // Push fails last, at 60 ms, after SMS and email were delivered. `try_join!` returns its
    // error, `?` returns it from here, and the writes below never run. (Had push failed
    // first, `try_join!` would have dropped SMS and email mid-request: no better.)
    tokio::try_join!(
        provider_send(Channel::Push, n, 1),
        provider_send(Channel::Sms, n, 1),
        provider_send(Channel::Email, n, 1),
    )?;
    for channel in Channel::ALL {
        outbox.record(n.id, channel, &Ok(()))?;
    }
    Ok(())
}

async fn broken_engine() -> Result<(), Box<dyn Error>> {
    println!("== Act 1: tokio::try_join!, outbox written after the join (in-memory database) ==");
    let outbox = Outbox::in_memory()?;
    let n = ORDER_SHIPPED;
    // The engine's retry loop: a notification not marked sent on every channel is sent
    // again. Two rounds show the loop; in production it never ends.
    for round in 1..=2 {
        let unsent = 3 - outbox.sent_count(n.id)?;
        println!(
            "Round {round}: {unsent} of 3 channels not marked sent, delivering {}",
            n.id
        );
        if let Err(e) = notify_the_old_way(&outbox, n).await {
            println!("Caught error: {e}");
        }
        println!("  outbox rows afterwards: {}", outbox.rows()?.len());
    }
    println!(
        "The customer got {} SMS and {} emails for one notification, and the outbox is still \
         empty: the next round sends both again.",
        delivered(Channel::Sms),
        delivered(Channel::Email),
    );
    println!();
    Ok(())
}

/// What one channel did in act 2.
enum Delivery {
    Sent { attempt: u32 },
    AlreadySent,
}

#[derive(Debug)]
enum DeliveryError {
    /// The provider refused: recorded as `failed`, retried on the next run.
    Provider { attempt: u32, error: ProviderError },
    /// The outbox could not be read or written.
    Outbox(rusqlite::Error),
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Provider { attempt, error } => {
                write!(f, "attempt {attempt} failed: {error}")
            }
            DeliveryError::Outbox(e) => write!(f, "outbox: {e}"),
        }
    }
}

impl From<rusqlite::Error> for DeliveryError {
    fn from(e: rusqlite::Error) -> Self {
        DeliveryError::Outbox(e)
    }
}

/// One channel, start to end: claim the outbox row, send, record the outcome.
///
/// The send and the record of it sit in one branch, and `settle` never cancels a branch, so
/// a delivery that happened is always written down.
async fn deliver(
    outbox: Outbox,
    n: Notification,
    channel: Channel,
) -> Result<Delivery, DeliveryError> {
    let Some(attempt) = outbox.claim(n.id, channel)? else {
        return Ok(Delivery::AlreadySent);
    };
    let outcome = provider_send(channel, n, attempt).await;
    outbox.record(n.id, channel, &outcome)?;
    match outcome {
        Ok(()) => Ok(Delivery::Sent { attempt }),
        Err(error) => Err(DeliveryError::Provider { attempt, error }),
    }
}

async fn outbox_engine(path: &Path) -> Result<(), Box<dyn Error>> {
    println!(
        "== Act 2: gather!(policy = settle, spawn; ...), each branch writes its outbox row =="
    );
    println!("Database: {}", path.display());
    let outbox = Outbox::open(path)?;
    let n = ORDER_SHIPPED;
    println!("Delivering {}", n.id);
    // `settle`, not `cancel`: had push failed before the others finished, `cancel` would drop
    // SMS and email mid-request, leaving their rows `sending` whether or not they went out.
    // Each branch owns what it uses (an `Outbox` handle, a `Copy` notification), so the
    // branches are `Send + 'static` and run as spawned tasks (`spawn`): on the runtime's
    // worker threads, and still never left running when `gather!` returns.
    let (push, sms, email) = gather!(policy = settle, spawn;
        push = deliver(outbox.clone(), n, Channel::Push),
        sms = deliver(outbox.clone(), n, Channel::Sms),
        email = deliver(outbox.clone(), n, Channel::Email),
    );
    // `settle` returns when all three are done, each outcome a value.
    let mut retry = false;
    for (channel, result) in Channel::ALL.into_iter().zip([push, sms, email]) {
        match result {
            Ok(Delivery::Sent { attempt }) => println!("{channel:<5} sent on attempt {attempt}"),
            Ok(Delivery::AlreadySent) => println!("{channel:<5} already sent, skipped"),
            Err(e @ DeliveryError::Provider { .. }) => {
                retry = true;
                println!("{channel:<5} {e}; recorded as failed, retried on the next run");
            }
            Err(e) => {
                retry = true;
                println!("{channel:<5} {e}");
            }
        }
    }
    println!();
    println!("Outbox:");
    print_table(&outbox.rows()?);
    println!();
    if retry {
        println!("Run it again: the failed channel is retried, the sent ones are skipped.");
    } else {
        println!("Every channel is sent: another run sends nothing (`-- --reset` starts over).");
    }
    Ok(())
}

fn print_table(rows: &[OutboxRow]) {
    let header = [
        "notification_id",
        "channel",
        "status",
        "attempts",
        "error",
        "updated_at (UTC)",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.notification_id.clone(),
                r.channel.clone(),
                r.status.clone(),
                r.attempts.to_string(),
                r.error.clone().unwrap_or_default(),
                r.updated_at.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |row: &[&str]| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(&header);
    line(&widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join("gather-notifications.sqlite3");
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [flag] if flag == "--reset" => match std::fs::remove_file(&path) {
            Ok(()) => println!("Deleted {}\n", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        },
        _ => return Err("usage: cargo run --example notifications [-- --reset]".into()),
    }

    broken_engine().await?;
    outbox_engine(&path).await
}
