//! Overview: payments by status, the last hour (charts), every queue's
//! depth, the workers. All of it live. Read with the operator API's
//! [`admin::overview`].

use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};

use crate::ops::admin::{self, Overview};
use crate::ops::console::html::{self, Nav};
use crate::ops::console::{charts, session::Session};
use crate::state::AppState;

pub(crate) async fn page(State(state): State<AppState>, session: Session) -> Response {
    match admin::overview(&state).await {
        Ok(overview) => html::page(
            &session,
            Nav::Overview,
            "Overview",
            html! {
                h1 { "Overview" }
                div data-live="/console/live/overview" { (content(&overview)) }
            },
        ),
        Err(err) => html::failure(err, Some(&session)),
    }
}

pub(crate) async fn live(State(state): State<AppState>, session: Session) -> Response {
    match admin::overview(&state).await {
        Ok(overview) => html::fragment(content(&overview)),
        Err(err) => html::failure(err, Some(&session)),
    }
}

fn content(overview: &Overview) -> Markup {
    let now = Utc::now();
    let total: i64 = overview.statuses.iter().map(|s| s.count).sum();
    let dead_after = overview.worker_dead_after_secs;
    let alive = overview
        .workers
        .iter()
        .filter(|w| w.heartbeat_age_secs <= dead_after)
        .count();
    html! {
        section aria-labelledby="statuses" {
            h2 id="statuses" { "Payments by status" }
            @if overview.statuses.is_empty() {
                p { "No payments yet." }
            } @else {
                ul class="tiles" {
                    @for status in &overview.statuses {
                        li class={ "tile status-" (status.status) } {
                            span class="count" { (status.count) }
                            span class="label" { (status.status) }
                        }
                    }
                }
                p class="hint" { (total) " payments in all." }
            }
        }
        section aria-labelledby="hour" {
            h2 id="hour" { "The last hour" }
            div class="charts" {
                figure {
                    (charts::throughput(&overview.last_hour, now))
                    figcaption { "Payments reaching a final status, per minute." }
                }
                figure {
                    (charts::latency(&overview.last_hour, now))
                    figcaption {
                        "Accept → final status: "
                        span class="key-p50" { "median" } " and "
                        span class="key-p95" { "95th percentile" } ", per minute."
                    }
                }
            }
            @if !overview.last_hour.is_empty() {
                details {
                    summary { "The last hour as a table" }
                    table {
                        thead {
                            tr {
                                th scope="col" { "Minute" }
                                th scope="col" class="num" { "Finished" }
                                th scope="col" class="num" { "Median latency" }
                                th scope="col" class="num" { "95th percentile" }
                            }
                        }
                        tbody {
                            @for minute in overview.last_hour.iter().rev() {
                                tr {
                                    th scope="row" { (html::time(minute.minute)) }
                                    td class="num" { (minute.finished) }
                                    td class="num" { (html::duration(minute.p50_ms / 1000.0)) }
                                    td class="num" { (html::duration(minute.p95_ms / 1000.0)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="queues" {
            h2 id="queues" { "Queues" }
            table {
                caption class="visually-hidden" { "Messages ready in each queue" }
                thead { tr { th scope="col" { "Queue" } th scope="col" class="num" { "Ready" } } }
                tbody {
                    @for queue in &overview.queues {
                        tr data-queue=(queue.queue) {
                            th scope="row" { code { (queue.queue) } }
                            td class="num" {
                                @match queue.depth {
                                    Some(depth) => (depth),
                                    None => span class="muted" { "not declared or unreachable" },
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="workers" {
            h2 id="workers" { "Workers" }
            p { (alive) " alive (a heartbeat in the last " (html::duration(dead_after)) ")." }
            @if !overview.workers.is_empty() {
                table {
                    caption class="visually-hidden" { "Workers, with their last heartbeat and the jobs they hold" }
                    thead {
                        tr {
                            th scope="col" { "Worker" }
                            th scope="col" { "Started" }
                            th scope="col" { "Last heartbeat" }
                            th scope="col" class="num" { "In flight" }
                        }
                    }
                    tbody {
                        @for worker in &overview.workers {
                            @let dead = worker.heartbeat_age_secs > dead_after;
                            tr class=[dead.then_some("dead")] {
                                th scope="row" { code { (worker.id) } }
                                td { (html::time(worker.started_at)) }
                                td {
                                    (html::duration(worker.heartbeat_age_secs)) " ago"
                                    @if dead { " — " strong { "dead" } }
                                }
                                td class="num" { (worker.in_flight) }
                            }
                        }
                    }
                }
            }
        }
    }
}
