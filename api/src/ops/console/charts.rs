//! The overview's charts, drawn on the server as inline SVG: payments
//! finished per minute (bars) and their accept→terminal latency (median and
//! 95th percentile lines) over the last hour.
//!
//! Colours and strokes are presentation attributes and classes of the
//! console's style sheet, never `style` attributes (the policy allows no
//! inline style). Each chart is an image with a title and a description in
//! words, for screen readers; the overview also has the numbers as a table
//! (in a `details` element).

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use common::db::console_views::Minute;
use maud::{html, Markup};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
/// Room for the axis labels.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 10.0;
/// Minutes shown.
const MINUTES: usize = 60;

/// The last hour, one slot per minute, oldest first, ending with the
/// current minute; minutes without a finished payment are `None`.
pub(crate) fn slots(minutes: &[Minute], now: DateTime<Utc>) -> Vec<Option<&Minute>> {
    let current = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    (0..MINUTES)
        .map(|i| {
            let back = i64::try_from(MINUTES - 1 - i).unwrap_or(0);
            let at = current - TimeDelta::minutes(back);
            minutes.iter().find(|m| m.minute == at)
        })
        .collect()
}

/// A maximum for the y axis at or above `max`: 1, 2 or 5 times a power of
/// ten, so the top label is a round number.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= max)
        .unwrap_or(max)
}

fn x_of(slot: usize) -> f64 {
    let step = (WIDTH - LEFT) / MINUTES as f64;
    LEFT + step * slot as f64
}

fn y_of(value: f64, max: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    HEIGHT - BOTTOM - plot * (value / max).clamp(0.0, 1.0)
}

/// The axes and their labels: `top` at the top of the y axis, the hour
/// along the x axis.
fn axes(top: &str) -> Markup {
    html! {
        g class="axis" {
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
            line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
            text x=(LEFT - 6.0) y=(TOP + 8.0) text-anchor="end" { (top) }
            text x=(LEFT - 6.0) y=(HEIGHT - BOTTOM) text-anchor="end" { "0" }
            text x=(LEFT) y=(HEIGHT - 6.0) { "60 min ago" }
            text x=((LEFT + WIDTH) / 2.0) y=(HEIGHT - 6.0) text-anchor="middle" { "30 min ago" }
            text x=(WIDTH) y=(HEIGHT - 6.0) text-anchor="end" { "now" }
        }
    }
}

/// Payments finished per minute, as bars.
pub(crate) fn throughput(minutes: &[Minute], now: DateTime<Utc>) -> Markup {
    let slots = slots(minutes, now);
    let total: i64 = minutes.iter().map(|m| m.finished).sum();
    let busiest = minutes.iter().map(|m| m.finished).max().unwrap_or(0);
    let max = nice_max(busiest as f64);
    let bar = (WIDTH - LEFT) / MINUTES as f64 - 2.0;
    html! {
        svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-labelledby="throughput-title throughput-desc" {
            title id="throughput-title" { "Payments finished per minute, last hour" }
            desc id="throughput-desc" {
                (total) " payments reached a final status in the last hour; the busiest minute had "
                (busiest) "."
            }
            (axes(&format!("{max}")))
            @for (i, slot) in slots.iter().enumerate() {
                @if let Some(minute) = slot {
                    @let y = y_of(minute.finished as f64, max);
                    rect class="bar" x=(x_of(i) + 1.0) y=(y) width=(bar)
                        height=((HEIGHT - BOTTOM - y).max(0.0)) {}
                }
            }
        }
    }
}

/// Median and 95th-percentile latency per minute, as two lines.
pub(crate) fn latency(minutes: &[Minute], now: DateTime<Utc>) -> Markup {
    let slots = slots(minutes, now);
    let worst = minutes.iter().map(|m| m.p95_ms).fold(0.0, f64::max);
    let max = nice_max(worst);
    let points = |pick: fn(&Minute) -> f64| -> String {
        let step = (WIDTH - LEFT) / MINUTES as f64;
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                slot.map(|m| format!("{:.1},{:.1}", x_of(i) + step / 2.0, y_of(pick(m), max)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let top = if max >= 1000.0 {
        format!("{} s", max / 1000.0)
    } else {
        format!("{max} ms")
    };
    let last = minutes.last();
    html! {
        svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-labelledby="latency-title latency-desc" {
            title id="latency-title" { "Accept to final status latency, last hour" }
            desc id="latency-desc" {
                @match last {
                    Some(m) => {
                        "In the latest minute with finished payments the median was "
                        (format!("{:.0}", m.p50_ms)) " ms and the 95th percentile "
                        (format!("{:.0}", m.p95_ms)) " ms; the worst 95th percentile of the hour was "
                        (format!("{worst:.0}")) " ms."
                    }
                    None => "No payment finished in the last hour.",
                }
            }
            (axes(&top))
            polyline class="p95" fill="none" points=(points(|m| m.p95_ms)) {}
            polyline class="p50" fill="none" points=(points(|m| m.p50_ms)) {}
            // A dot per minute too: a minute alone between empty ones is no
            // line.
            @for (i, slot) in slots.iter().enumerate() {
                @if let Some(m) = slot {
                    @let x = x_of(i) + (WIDTH - LEFT) / MINUTES as f64 / 2.0;
                    circle class="p95" cx=(format!("{x:.1}")) cy=(format!("{:.1}", y_of(m.p95_ms, max))) r="2.5" {}
                    circle class="p50" cx=(format!("{x:.1}")) cy=(format!("{:.1}", y_of(m.p50_ms, max))) r="2.5" {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(at: DateTime<Utc>, finished: i64) -> Minute {
        Minute {
            minute: at,
            finished,
            p50_ms: 100.0,
            p95_ms: 250.0,
        }
    }

    #[test]
    fn the_hour_has_sixty_slots_ending_with_the_current_minute() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:15:42Z")
            .expect("a time")
            .with_timezone(&Utc);
        let current = DateTime::parse_from_rfc3339("2026-12-03T10:15:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let old = current - TimeDelta::minutes(59);
        let too_old = current - TimeDelta::minutes(60);
        let minutes = [minute(too_old, 9), minute(old, 2), minute(current, 3)];
        let slots = slots(&minutes, now);
        assert_eq!(slots.len(), 60);
        assert_eq!(slots[0].map(|m| m.finished), Some(2));
        assert_eq!(slots[59].map(|m| m.finished), Some(3));
        assert_eq!(slots.iter().flatten().count(), 2, "the 61st minute is out");
    }

    #[test]
    fn the_axis_ends_on_a_round_number() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(140.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    #[test]
    fn a_bar_per_minute_with_payments_and_words_for_screen_readers() {
        let now = Utc::now();
        let current = now.duration_trunc(TimeDelta::minutes(1)).expect("minute");
        let svg = throughput(&[minute(current, 4)], now).into_string();
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
        assert!(svg.contains("4 payments reached a final status"), "{svg}");
        assert!(!svg.contains("style="), "no inline style: {svg}");
    }
}
