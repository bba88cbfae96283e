//! Needs attention: payments whose outcome is unknown, that are held for an
//! operator, or whose next step is overdue; webhook endpoints that fail.
//! Each row says why in words and links to what it is about. Live. Read
//! with the operator API's [`admin::attention`].

use axum::extract::State;
use axum::response::Response;
use common::db::console_views::{FailingEndpoint, StuckPayment};
use common::domain::{EndpointId, PaymentId};
use maud::{html, Markup};

use crate::ops::admin::{self, Attention};
use crate::ops::console::html::{self, Nav};
use crate::ops::console::session::Session;
use crate::state::AppState;

pub(crate) async fn page(State(state): State<AppState>, session: Session) -> Response {
    match admin::attention(&state).await {
        Ok(attention) => html::page(
            &session,
            Nav::Attention,
            "Needs attention",
            html! {
                h1 { "Needs attention" }
                div data-live="/console/live/attention" { (content(&attention)) }
            },
        ),
        Err(err) => html::failure(err, Some(&session)),
    }
}

pub(crate) async fn live(State(state): State<AppState>, session: Session) -> Response {
    match admin::attention(&state).await {
        Ok(attention) => html::fragment(content(&attention)),
        Err(err) => html::failure(err, Some(&session)),
    }
}

/// Why a payment is on this page, in words (every reason that holds).
pub(crate) fn why(payment: &StuckPayment, overdue_after_secs: f64) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(since) = payment.outcome_unknown_since {
        reasons.push(format!(
            "The outcome of its last processor call is unknown since {} (the answer was lost); \
             the worker asks the processor before it tries again, so it is not charged twice.",
            html::ago(since)
        ));
    }
    if let Some(since) = payment.held_at {
        reasons.push(format!(
            "Held for an operator since {}: the processor refused our request itself \
             (a configuration problem, not the card). It waits, pending, until replayed.",
            html::ago(since)
        ));
    }
    if let Some(due) = payment.due_at {
        let late = (chrono::Utc::now() - due).num_milliseconds() as f64 / 1000.0;
        if late > overdue_after_secs {
            reasons.push(format!(
                "Its next step was due {} and no worker has taken it (more than RESCUE_AFTER, \
                 {}): are the workers running?",
                html::ago(due),
                html::duration(overdue_after_secs)
            ));
        }
    }
    if let Some(error) = &payment.last_error {
        reasons.push(format!(
            "Last error, after {} attempts: {error}",
            payment.attempts
        ));
    }
    reasons
}

/// Why an endpoint is on this page, in words.
fn endpoint_why(endpoint: &FailingEndpoint) -> Vec<String> {
    let mut reasons = Vec::new();
    if endpoint.status == "disabled" {
        reasons.push(match &endpoint.disabled_reason {
            Some(reason) => format!("Disabled: {reason}."),
            None => "Disabled.".to_owned(),
        });
    }
    if endpoint.failures > 0 {
        reasons.push(format!(
            "{} failed delivery attempts in the last hour.",
            endpoint.failures
        ));
    }
    if endpoint.dead_deliveries > 0 {
        reasons.push(format!(
            "{} deliveries given up on.",
            endpoint.dead_deliveries
        ));
    }
    if let Some(outcome) = &endpoint.last_outcome {
        reasons.push(format!("Last attempt: {outcome}."));
    }
    reasons
}

fn content(attention: &Attention) -> Markup {
    html! {
        section aria-labelledby="stuck" {
            h2 id="stuck" { "Payments (" (attention.payments.len()) ")" }
            @if attention.payments.is_empty() {
                p { "No payment is stuck: none has an unknown outcome, none is held, none is overdue." }
            } @else {
                table {
                    caption class="visually-hidden" { "Payments that need an operator, and why" }
                    thead {
                        tr {
                            th scope="col" { "Payment" }
                            th scope="col" { "Status" }
                            th scope="col" { "Why" }
                        }
                    }
                    tbody {
                        @for payment in &attention.payments {
                            @let id = PaymentId(payment.id).to_string();
                            tr data-payment-id=(id) {
                                th scope="row" {
                                    (html::payment_link(&id))
                                    div class="muted" { "merchant " code { (payment.merchant_id) } }
                                }
                                td { (payment.status) }
                                td {
                                    ul class="reasons" {
                                        @for reason in why(payment, attention.overdue_after_secs) {
                                            li { (reason) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="endpoints" {
            h2 id="endpoints" { "Webhook endpoints (" (attention.endpoints.len()) ")" }
            @if attention.endpoints.is_empty() {
                p { "Every webhook endpoint delivers." }
            } @else {
                table {
                    caption class="visually-hidden" { "Failing webhook endpoints, and why" }
                    thead {
                        tr {
                            th scope="col" { "Endpoint" }
                            th scope="col" { "Merchant" }
                            th scope="col" { "Why" }
                        }
                    }
                    tbody {
                        @for endpoint in &attention.endpoints {
                            tr {
                                th scope="row" { (endpoint.url) }
                                td { code { (endpoint.merchant_id) } }
                                td {
                                    ul class="reasons" {
                                        @for reason in endpoint_why(endpoint) { li { (reason) } }
                                    }
                                    @if endpoint.dead_deliveries > 0 {
                                        a href={ "/console/webhooks?endpoint=" (EndpointId(endpoint.id)) } {
                                            "Its dead deliveries"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, Utc};

    fn stuck() -> StuckPayment {
        StuckPayment {
            id: uuid::Uuid::now_v7(),
            merchant_id: uuid::Uuid::now_v7(),
            status: "processing".into(),
            outcome_unknown_since: None,
            held_at: None,
            due_at: None,
            last_error: None,
            attempts: 1,
        }
    }

    #[test]
    fn each_reason_a_payment_is_stuck_is_said_in_words() {
        let mut payment = stuck();
        payment.outcome_unknown_since = Some(Utc::now());
        payment.held_at = Some(Utc::now());
        payment.due_at = Some(Utc::now() - TimeDelta::seconds(120));
        payment.last_error = Some("processor timed out".into());
        let reasons = why(&payment, 60.0);
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].contains("unknown"), "{reasons:?}");
        assert!(
            reasons[1].starts_with("Held for an operator"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("RESCUE_AFTER"), "{reasons:?}");
        assert!(reasons[3].contains("processor timed out"), "{reasons:?}");
    }

    #[test]
    fn a_payment_due_recently_is_not_called_overdue() {
        let mut payment = stuck();
        payment.due_at = Some(Utc::now() - TimeDelta::seconds(10));
        assert!(why(&payment, 60.0).is_empty());
    }
}
