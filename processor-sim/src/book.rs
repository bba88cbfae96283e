//! The charge book: what the simulator remembers of each charge after
//! answering it, so captures, voids and refunds can be checked against it.
//!
//! Every rule that protects money is here, as plain synchronous code run
//! under the one ledger lock ([`crate::state`]): checking that a refund fits
//! and recording it happen in one critical section, so concurrent refunds of
//! one charge (with different idempotency keys) can never together refund
//! more than was captured.

use std::collections::HashMap;

use crate::cards::RefundVerdict;

/// Where a charge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChargeState {
    /// The issuer declined it: nothing to capture, void or refund.
    Declined,
    /// Approved with `capture: false`: money held, not moved.
    Authorized,
    /// Money moved: `amount` minor units, the ceiling of refunds.
    Captured { amount: i64 },
    /// The authorization was released; it can never be captured.
    Voided,
}

impl ChargeState {
    /// For refusal messages.
    fn name(self) -> &'static str {
        match self {
            Self::Declined => "declined",
            Self::Authorized => "authorized and not captured",
            Self::Captured { .. } => "captured",
            Self::Voided => "voided",
        }
    }
}

/// One charge as the book keeps it. No card token: only what later
/// operations need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChargeRecord {
    /// Minor units authorized (or charged, when captured at once).
    pub(crate) amount: i64,
    pub(crate) currency: String,
    /// Whether the card's issuer accepts refunds (`tok_refundFails` does
    /// not).
    pub(crate) refund_verdict: RefundVerdict,
    pub(crate) state: ChargeState,
    /// Sum of refunds paid so far.
    pub(crate) refunded: i64,
}

/// Why the book refuses an operation. Every variant but `NoSuchCharge` is a
/// decision about an existing charge, stored under the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoSuchCharge,
    NotCapturable { state: &'static str },
    AmountExceedsCapturable { capturable: i64 },
    NotVoidable { state: &'static str },
    NotRefundable { state: &'static str },
    AmountExceedsRefundable { refundable: i64 },
}

/// A capture the book recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Captured {
    pub(crate) amount: i64,
    pub(crate) released: i64,
    pub(crate) currency: String,
}

/// A void the book recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Voided {
    pub(crate) released: i64,
    pub(crate) currency: String,
}

/// The outcome of a refund that fit: paid, or declined by the card's issuer
/// (nothing recorded, the amount stays refundable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refunded {
    Paid {
        currency: String,
    },
    Declined {
        currency: String,
        message: &'static str,
    },
}

/// Charges by id (`ch_…`).
#[derive(Debug, Default)]
pub(crate) struct ChargeBook {
    charges: HashMap<String, ChargeRecord>,
}

impl ChargeBook {
    pub(crate) fn insert(&mut self, id: String, record: ChargeRecord) {
        self.charges.insert(id, record);
    }

    pub(crate) fn get(&self, id: &str) -> Option<&ChargeRecord> {
        self.charges.get(id)
    }

    /// Captures `amount` (default: all) of an authorization. What is not
    /// captured is released, so a second capture is refused.
    pub(crate) fn capture(&mut self, id: &str, amount: Option<i64>) -> Result<Captured, Refusal> {
        let record = self.charges.get_mut(id).ok_or(Refusal::NoSuchCharge)?;
        if record.state != ChargeState::Authorized {
            return Err(Refusal::NotCapturable {
                state: record.state.name(),
            });
        }
        let amount = amount.unwrap_or(record.amount);
        if amount > record.amount {
            return Err(Refusal::AmountExceedsCapturable {
                capturable: record.amount,
            });
        }
        record.state = ChargeState::Captured { amount };
        Ok(Captured {
            amount,
            released: record.amount - amount,
            currency: record.currency.clone(),
        })
    }

    /// Voids an authorization: only one neither captured nor voided.
    pub(crate) fn void(&mut self, id: &str) -> Result<Voided, Refusal> {
        let record = self.charges.get_mut(id).ok_or(Refusal::NoSuchCharge)?;
        if record.state != ChargeState::Authorized {
            return Err(Refusal::NotVoidable {
                state: record.state.name(),
            });
        }
        record.state = ChargeState::Voided;
        Ok(Voided {
            released: record.amount,
            currency: record.currency.clone(),
        })
    }

    /// Refunds `amount` of a captured charge if it fits in what is still
    /// refundable; checked and recorded in one step (see the module doc).
    pub(crate) fn refund(&mut self, id: &str, amount: i64) -> Result<Refunded, Refusal> {
        let record = self.charges.get_mut(id).ok_or(Refusal::NoSuchCharge)?;
        let ChargeState::Captured { amount: captured } = record.state else {
            return Err(Refusal::NotRefundable {
                state: record.state.name(),
            });
        };
        let refundable = captured - record.refunded;
        if amount > refundable {
            return Err(Refusal::AmountExceedsRefundable { refundable });
        }
        let currency = record.currency.clone();
        if let RefundVerdict::Decline { message } = record.refund_verdict {
            return Ok(Refunded::Declined { currency, message });
        }
        record.refunded += amount;
        Ok(Refunded::Paid { currency })
    }

    /// Whether the charge has been refunded beyond what it captured: the
    /// evidence behind `over_refunds`, computed from the record rather than
    /// trusted from [`ChargeBook::refund`]'s check.
    pub(crate) fn over_refunded(&self, id: &str) -> bool {
        self.get(id).is_some_and(|record| match record.state {
            ChargeState::Captured { amount } => record.refunded > amount,
            _ => record.refunded > 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book_with(state: ChargeState, refunds_decline: bool) -> ChargeBook {
        let refund_verdict = if refunds_decline {
            RefundVerdict::Decline { message: "no" }
        } else {
            RefundVerdict::Accept
        };
        let mut book = ChargeBook::default();
        book.insert(
            "ch_1".to_owned(),
            ChargeRecord {
                amount: 10_000,
                currency: "USD".to_owned(),
                refund_verdict,
                state,
                refunded: 0,
            },
        );
        book
    }

    #[test]
    fn a_partial_capture_releases_the_rest_and_cannot_be_repeated() {
        let mut book = book_with(ChargeState::Authorized, false);
        let captured = book.capture("ch_1", Some(6_000)).expect("capture");
        assert_eq!((captured.amount, captured.released), (6_000, 4_000));
        assert!(matches!(
            book.capture("ch_1", Some(1_000)),
            Err(Refusal::NotCapturable { state: "captured" })
        ));
        assert!(matches!(
            book.refund("ch_1", 6_001),
            Err(Refusal::AmountExceedsRefundable { refundable: 6_000 })
        ));
    }

    #[test]
    fn a_capture_above_the_authorization_is_refused_and_changes_nothing() {
        let mut book = book_with(ChargeState::Authorized, false);
        assert_eq!(
            book.capture("ch_1", Some(10_001)),
            Err(Refusal::AmountExceedsCapturable { capturable: 10_000 })
        );
        let captured = book.capture("ch_1", None).expect("capture");
        assert_eq!((captured.amount, captured.released), (10_000, 0));
    }

    #[test]
    fn only_an_uncaptured_authorization_can_be_voided() {
        let mut book = book_with(ChargeState::Authorized, false);
        assert_eq!(book.void("ch_1").expect("void").released, 10_000);
        assert!(matches!(
            book.void("ch_1"),
            Err(Refusal::NotVoidable { state: "voided" })
        ));
        assert!(matches!(
            book.capture("ch_1", None),
            Err(Refusal::NotCapturable { .. })
        ));
        let mut captured = book_with(ChargeState::Captured { amount: 10_000 }, false);
        assert!(matches!(
            captured.void("ch_1"),
            Err(Refusal::NotVoidable { state: "captured" })
        ));
    }

    #[test]
    fn refunds_add_up_to_the_captured_amount_and_no_further() {
        let mut book = book_with(ChargeState::Captured { amount: 10_000 }, false);
        for _ in 0..10 {
            assert!(matches!(
                book.refund("ch_1", 1_000),
                Ok(Refunded::Paid { .. })
            ));
        }
        assert_eq!(
            book.refund("ch_1", 1),
            Err(Refusal::AmountExceedsRefundable { refundable: 0 })
        );
        assert!(!book.over_refunded("ch_1"));
    }

    #[test]
    fn an_uncaptured_or_declined_charge_cannot_be_refunded() {
        for state in [ChargeState::Authorized, ChargeState::Declined] {
            let mut book = book_with(state, false);
            assert!(matches!(
                book.refund("ch_1", 1),
                Err(Refusal::NotRefundable { .. })
            ));
        }
    }

    #[test]
    fn a_declined_refund_leaves_the_amount_refundable() {
        let mut book = book_with(ChargeState::Captured { amount: 10_000 }, true);
        assert!(matches!(
            book.refund("ch_1", 10_000),
            Ok(Refunded::Declined { .. })
        ));
        assert_eq!(book.get("ch_1").map(|r| r.refunded), Some(0));
    }

    #[test]
    fn an_unknown_charge_is_refused_by_every_operation() {
        let mut book = ChargeBook::default();
        assert_eq!(book.capture("ch_x", None), Err(Refusal::NoSuchCharge));
        assert_eq!(book.void("ch_x"), Err(Refusal::NoSuchCharge));
        assert_eq!(book.refund("ch_x", 1), Err(Refusal::NoSuchCharge));
    }
}
