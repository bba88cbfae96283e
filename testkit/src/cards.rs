//! The processor simulator's test tokens and what each one does, in one
//! table, for tests to name instead of writing the tokens again
//! (`processor-sim/src/cards.rs` is what the simulator does with them).
//!
//! Any token not listed is a visa that approves, so a test that only needs
//! a payment to succeed may use [`VISA`] or a made-up token of its own.

/// Visa credit, approves (`4242`).
pub const VISA: &str = "tok_visa";
/// Visa debit, approves (`5556`).
pub const VISA_DEBIT: &str = "tok_visa_debit";
/// Mastercard credit, approves (`4444`).
pub const MASTERCARD: &str = "tok_mastercard";
/// Amex credit, approves (`0005`).
pub const AMEX: &str = "tok_amex";
/// Charges approve; every refund of such a charge is declined.
pub const REFUND_FAILS: &str = "tok_refundFails";
/// A generic decline.
pub const DECLINED: &str = "tok_chargeDeclined";
/// Declined for insufficient funds.
pub const INSUFFICIENT_FUNDS: &str = "tok_chargeDeclinedInsufficientFunds";
/// Declined: wrong security code.
pub const INCORRECT_CVC: &str = "tok_chargeDeclinedIncorrectCvc";
/// Declined: the card expired.
pub const EXPIRED_CARD: &str = "tok_chargeDeclinedExpiredCard";
/// Declined: the issuer could not process it.
pub const PROCESSING_ERROR: &str = "tok_chargeDeclinedProcessingError";

/// A token whose charges the issuer approves, and the card it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Approved {
    pub token: &'static str,
    pub last4: &'static str,
    pub brand: &'static str,
    pub funding: &'static str,
}

/// A token whose charges the issuer declines, and how.
#[derive(Debug, Clone, Copy)]
pub struct Declined {
    pub token: &'static str,
    /// The payment's `failure_code`.
    pub code: &'static str,
    /// `processor_response.decline_code`.
    pub decline_code: &'static str,
}

/// Every approving card.
pub const APPROVED: [Approved; 4] = [
    Approved {
        token: VISA,
        last4: "4242",
        brand: "visa",
        funding: "credit",
    },
    Approved {
        token: VISA_DEBIT,
        last4: "5556",
        brand: "visa",
        funding: "debit",
    },
    Approved {
        token: MASTERCARD,
        last4: "4444",
        brand: "mastercard",
        funding: "credit",
    },
    Approved {
        token: AMEX,
        last4: "0005",
        brand: "amex",
        funding: "credit",
    },
];

/// Every declining card.
pub const DECLINES: [Declined; 5] = [
    Declined {
        token: DECLINED,
        code: "card_declined",
        decline_code: "generic_decline",
    },
    Declined {
        token: INSUFFICIENT_FUNDS,
        code: "card_declined",
        decline_code: "insufficient_funds",
    },
    Declined {
        token: INCORRECT_CVC,
        code: "incorrect_cvc",
        decline_code: "incorrect_cvc",
    },
    Declined {
        token: EXPIRED_CARD,
        code: "expired_card",
        decline_code: "expired_card",
    },
    Declined {
        token: PROCESSING_ERROR,
        code: "processing_error",
        decline_code: "processing_error",
    },
];
