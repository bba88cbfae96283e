//! Dead-letter queue operations for operators: list, replay, purge. Used by
//! the `worker dlq` commands and the API's admin endpoints.
//!
//! Listing takes messages without acking them and then closes the channel,
//! which returns them to their original places (the dead-letter queue is a
//! classic queue), so a listing neither consumes nor reorders the queue.
//! Replay and purge use the same walk and ack only what they handled.

use std::collections::HashSet;
use std::time::Duration;

use crate::db::lifecycle::Audit;
use crate::db::payments;
use crate::domain::{failure_codes, DomainError, PaymentId};
use crate::queue::{headers, Broker, Job};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Why a job was dead-lettered: written by the worker in the message's
/// headers, read back here, and filtered on by operators. The wire form is
/// the snake_case name (`attempts_exhausted`, …).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Every attempt failed on errors known not to have charged.
    AttemptsExhausted,
    /// The message body is not a job.
    Undecodable,
    /// The job names no payment or operation we know.
    UnknownPayment,
    /// Workers kept dying while holding it (our poison check).
    RedeliveredTooOften,
    /// The processor refused our request itself (misconfiguration); the
    /// payment is held, not failed.
    ProcessorRejected,
    /// The broker's own delivery limit took it (its `x-death` reason).
    DeliveryLimit,
    /// A reason this version does not know (an older or newer writer).
    Unknown,
}

impl DeadLetterReason {
    pub const ALL: [Self; 7] = [
        Self::AttemptsExhausted,
        Self::Undecodable,
        Self::UnknownPayment,
        Self::RedeliveredTooOften,
        Self::ProcessorRejected,
        Self::DeliveryLimit,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::Undecodable => "undecodable",
            Self::UnknownPayment => "unknown_payment",
            Self::RedeliveredTooOften => "redelivered_too_often",
            Self::ProcessorRejected => "processor_rejected",
            Self::DeliveryLimit => "delivery_limit",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeadLetterReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown reason; the reasons are {}", names.join(", "))
            })
    }
}

/// One dead-lettered job, as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// `None` when the body could not be decoded.
    pub payment_id: Option<String>,
    pub merchant_id: Option<Uuid>,
    pub reason: DeadLetterReason,
    pub attempts: Option<i64>,
    pub last_error: Option<String>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    fn from_message(message: &BasicGetMessage) -> (Self, Option<Job>) {
        let delivery = &message.delivery;
        let table = delivery.properties.headers().as_ref();
        let job = Job::from_bytes(&delivery.data).ok();
        let death = first_death(table);
        let reason = headers::get_string(table, headers::DEAD_REASON)
            .or_else(|| death.and_then(|d| headers::get_string(Some(d), "reason")))
            .map_or(DeadLetterReason::Unknown, |r| {
                r.parse().unwrap_or(DeadLetterReason::Unknown)
            });
        let dead_lettered_at = headers::get_string(table, headers::DEAD_AT)
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| {
                death
                    .and_then(|d| match d.inner().get("time") {
                        Some(AMQPValue::Timestamp(secs)) => i64::try_from(*secs).ok(),
                        _ => None,
                    })
                    .and_then(|secs| DateTime::from_timestamp(secs, 0))
            });
        let letter = Self {
            payment_id: job.as_ref().map(|j| j.payment_id().to_string()),
            merchant_id: job.as_ref().map(Job::merchant_id),
            reason,
            attempts: headers::get_int(table, headers::ATTEMPT),
            last_error: headers::get_string(table, headers::LAST_ERROR),
            dead_lettered_at,
        };
        (letter, job)
    }
}

/// The newest `x-death` entry the broker adds when it dead-letters a
/// message itself (delivery limit).
fn first_death(table: Option<&FieldTable>) -> Option<&FieldTable> {
    match table?.inner().get("x-death")? {
        AMQPValue::FieldArray(array) => array.as_slice().iter().find_map(|v| match v {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// The longest age an operator may select dead letters by: ten years (of
/// 365 days). Far past any retention, and small enough that "now minus the
/// age" is always a valid time: unbounded, a typed number panicked (past
/// chrono's range) or, converted with a fallback, selected every letter.
pub const MAX_AGE: Duration = Duration::from_secs(MAX_AGE_DAYS * 86_400);
const MAX_AGE_DAYS: u64 = 3650;

/// How old a dead letter must be to be selected; at most [`MAX_AGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(Duration);

impl Age {
    pub fn from_secs(secs: u64) -> Result<Self, DomainError> {
        if secs <= MAX_AGE.as_secs() {
            Ok(Self(Duration::from_secs(secs)))
        } else {
            Err(DomainError(Self::bound()))
        }
    }

    /// The bound, as errors state it.
    fn bound() -> String {
        format!(
            "an age is at most 10 years ({MAX_AGE_DAYS}d, {} s)",
            MAX_AGE.as_secs()
        )
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    /// `None`: every payment.
    pub ids: Option<HashSet<PaymentId>>,
    pub reason: Option<DeadLetterReason>,
    #[serde(skip)]
    pub older_than: Option<Age>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter, job: Option<&Job>) -> bool {
        let Some(job) = job else {
            return false;
        };
        if let Some(ids) = &self.ids {
            if !ids.contains(&job.payment_id()) {
                return false;
            }
        }
        if let Some(reason) = self.reason {
            if letter.reason != reason {
                return false;
            }
        }
        if let Some(age) = self.older_than {
            let Some(at) = letter.dead_lettered_at else {
                return false;
            };
            // `Age` is bounded, so neither step fails; if one did, no letter
            // would be that old.
            let Some(limit) = chrono::TimeDelta::from_std(age.get())
                .ok()
                .and_then(|age| Utc::now().checked_sub_signed(age))
            else {
                return false;
            };
            if at > limit {
                return false;
            }
        }
        true
    }
}

async fn dead_letter_channel(broker: &Broker) -> anyhow::Result<(Channel, u32)> {
    let channel = broker.open_channel().await?;
    let queue = channel
        .queue_declare(
            &broker.topology().dead_queue(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("reading the dead-letter queue")?;
    Ok((channel, queue.message_count()))
}

async fn next(channel: &Channel, broker: &Broker) -> anyhow::Result<Option<BasicGetMessage>> {
    channel
        .basic_get(
            &broker.topology().dead_queue(),
            // Not auto-ack: what we do not ack returns to the queue.
            BasicGetOptions { no_ack: false },
        )
        .await
        .context("reading a dead letter")
}

/// Walks of the dead-letter queue take turns within a process. A listing
/// holds the messages it has read until it closes its channel, so a replay
/// or purge walking beside it would not see them and do less than asked
/// (the operator console lists the queue every few seconds while it is
/// open, and its replay button runs meanwhile). Walks of two processes (a
/// second API, `worker dlq`) can still interleave: a replay then reports
/// fewer replayed than selected, never one it did not do, and what it did
/// not see stays dead-lettered for the next replay.
static WALK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Up to `limit` dead letters, oldest first; the queue is left as it was.
pub async fn list(broker: &Broker, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let _turn = WALK.lock().await;
    let (channel, count) = dead_letter_channel(broker).await?;
    let mut letters = Vec::new();
    for _ in 0..count.min(u32::try_from(limit).unwrap_or(u32::MAX)) {
        let Some(message) = next(&channel, broker).await? else {
            break;
        };
        letters.push(DeadLetter::from_message(&message).0);
    }
    // Closing returns every unacked message to its place.
    channel.close(200, "listing done").await.ok();
    wait_until_returned(broker, count).await;
    Ok(letters)
}

/// How long a listing waits for the messages it read to be back.
const RETURN_WAIT: Duration = Duration::from_secs(2);

/// Waits (at most [`RETURN_WAIT`]) until the queue holds `count` ready
/// messages again. The broker requeues a closed channel's unacked messages
/// a moment after it confirms the close, and a replay that counted the
/// queue in that moment would see none of them; so the listing, still
/// holding its turn ([`WALK`]), returns only once they are back. Fewer
/// after the wait (another process replayed or purged meanwhile) is not an
/// error.
async fn wait_until_returned(broker: &Broker, count: u32) {
    let deadline = tokio::time::Instant::now() + RETURN_WAIT;
    loop {
        match dead_letter_channel(broker).await {
            Ok((channel, ready)) => {
                channel.close(200, "counted").await.ok();
                if ready >= count {
                    return;
                }
            }
            Err(_) => return,
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a replay did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Payments moved back to `pending` and re-queued.
    pub replayed: Vec<String>,
    /// Dead letters removed without replay: the payment had moved on
    /// (succeeded meanwhile, or already replayed), so there was nothing to do.
    pub dropped: Vec<String>,
    /// Dead letters left in the queue (not selected, or not decodable).
    pub kept: usize,
}

/// Moves the selected dead letters back to the main queue and their payments
/// back to `pending`, recording `actor` in each payment's history.
pub async fn replay(
    pool: &PgPool,
    broker: &Broker,
    filter: &Filter,
    actor: &str,
) -> anyhow::Result<ReplayReport> {
    let _turn = WALK.lock().await;
    let (channel, count) = dead_letter_channel(broker).await?;
    let mut report = ReplayReport::default();
    for _ in 0..count {
        let Some(message) = next(&channel, broker).await? else {
            break;
        };
        let (letter, job) = DeadLetter::from_message(&message);
        let Some(job) = job.filter(|job| filter.matches(&letter, Some(job))) else {
            report.kept += 1;
            continue;
        };
        let id = job.payment_id();
        let audit = Audit {
            actor,
            reason: "replayed from the dead-letter queue",
        };
        // Database first: if we stop before publishing, the payment is
        // `pending` and due now, so the rescuer enqueues it.
        let replayed = match job.operation_id() {
            None => payments::replay(pool, id, &failure_codes::REPLAYABLE, audit)
                .await?
                .is_some(),
            Some(operation) => {
                crate::db::operations::replay(pool, operation, &failure_codes::REPLAYABLE, audit)
                    .await?
                    .is_some()
            }
        };
        match replayed {
            true => {
                broker.publish_job(&job).await?;
                report.replayed.push(id.to_string());
            }
            false => report.dropped.push(id.to_string()),
        }
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .context("acking a replayed dead letter")?;
    }
    channel.close(200, "replay done").await.ok();
    // What it kept is back in the queue before the next walk counts it.
    wait_until_returned(broker, u32::try_from(report.kept).unwrap_or(u32::MAX)).await;
    Ok(report)
}

/// Discards every dead letter, noting it in each payment's history.
/// Returns how many were discarded.
pub async fn purge(pool: &PgPool, broker: &Broker, actor: &str) -> anyhow::Result<usize> {
    let _turn = WALK.lock().await;
    let (channel, count) = dead_letter_channel(broker).await?;
    let mut purged = 0;
    for _ in 0..count {
        let Some(message) = next(&channel, broker).await? else {
            break;
        };
        if let (_, Some(job)) = DeadLetter::from_message(&message) {
            let audit = Audit {
                actor,
                reason: "dead letter purged by an operator; the payment stays failed",
            };
            payments::record_event(pool, &[job.payment_id().0], audit).await?;
        }
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .context("acking a purged dead letter")?;
        purged += 1;
    }
    channel.close(200, "purge done").await.ok();
    Ok(purged)
}

/// Parses `90`, `90s`, `15m`, `2h` or `1d`, at most ten years ([`MAX_AGE`]);
/// a number too large for any unit is refused, never wrapped around.
pub fn parse_age(value: &str) -> Result<Age, String> {
    let value = value.trim();
    let too_long = || format!("{value:?} is too long: {}", Age::bound());
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let n: u64 = number.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            too_long()
        } else {
            format!("{value:?} is not a duration like 90s, 15m, 2h, 1d")
        }
    })?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{value:?} has an unknown unit (use s, m, h or d)")),
    };
    let secs = n.checked_mul(unit_secs).ok_or_else(too_long)?;
    Age::from_secs(secs).map_err(|_| too_long())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_units() {
        let secs = |v: &str| parse_age(v).map(Age::get);
        assert_eq!(secs("90"), Ok(Duration::from_secs(90)));
        assert_eq!(secs("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(secs("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(secs("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("5y").is_err());
    }

    #[test]
    fn ages_past_ten_years_are_refused_never_wrapped() {
        assert_eq!(parse_age("3650d").map(Age::get), Ok(MAX_AGE));
        assert_eq!(parse_age("87600h").map(Age::get), Ok(MAX_AGE));
        // 213503982334602 × 86400 wraps a u64 around to about 17 hours.
        for age in [
            "3651d",
            "87601h",
            "315360001",
            "213503982334602d",
            "99999999999999999999s",
        ] {
            let err = parse_age(age).expect_err(age);
            assert!(err.contains("at most 10 years"), "{age}: {err}");
        }
        assert!(Age::from_secs(u64::MAX).is_err());
    }

    #[test]
    fn the_oldest_age_selects_nothing_recent_and_never_panics() {
        let job = Job::process_payment(PaymentId::new(), Uuid::nil());
        let letter = DeadLetter {
            payment_id: Some(job.payment_id().to_string()),
            merchant_id: Some(Uuid::nil()),
            reason: DeadLetterReason::AttemptsExhausted,
            attempts: Some(1),
            last_error: None,
            dead_lettered_at: Some(Utc::now() - chrono::TimeDelta::seconds(5)),
        };
        let filter = |secs| Filter {
            older_than: Some(Age::from_secs(secs).expect("a valid age")),
            ..Filter::default()
        };
        assert!(filter(1).matches(&letter, Some(&job)));
        assert!(!filter(60).matches(&letter, Some(&job)));
        assert!(!filter(MAX_AGE.as_secs()).matches(&letter, Some(&job)));
    }
}
