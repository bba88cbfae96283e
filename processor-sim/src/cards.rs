//! The test tokens, named as card developers know them, and what each one
//! does: which card it stands for, whether the issuer approves a charge on it,
//! and whether it accepts refunds to it.

use common::processor::CardDetails;
use sha2::{Digest, Sha256};

/// Every test card expires on the same date, far enough ahead to stay valid.
const EXP_MONTH: u32 = 12;
const EXP_YEAR: u32 = 2030;

/// The issuer's answer for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Approve,
    Decline {
        code: &'static str,
        decline_code: &'static str,
        message: &'static str,
    },
}

/// The issuer's answer to a refund to the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundVerdict {
    Accept,
    Decline { message: &'static str },
}

/// What the simulator knows about a token: its card and its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TestCard {
    last4: &'static str,
    brand: &'static str,
    funding: &'static str,
    country: &'static str,
    pub(crate) verdict: Verdict,
    pub(crate) refund_verdict: RefundVerdict,
}

const fn card(
    last4: &'static str,
    brand: &'static str,
    funding: &'static str,
    verdict: Verdict,
) -> TestCard {
    TestCard {
        last4,
        brand,
        funding,
        country: "US",
        verdict,
        refund_verdict: RefundVerdict::Accept,
    }
}

const fn decline(
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
) -> TestCard {
    // Declined cards are still known cards: the gateway reports them.
    card(
        "4242",
        "visa",
        "credit",
        Verdict::Decline {
            code,
            decline_code,
            message,
        },
    )
}

/// The card a token stands for. Any token not listed is a visa that approves,
/// so made-up tokens in examples and seeds just work.
pub(crate) fn lookup(token: &str) -> TestCard {
    match token {
        "tok_visa_debit" => card("5556", "visa", "debit", Verdict::Approve),
        "tok_mastercard" => card("4444", "mastercard", "credit", Verdict::Approve),
        "tok_amex" => card("0005", "amex", "credit", Verdict::Approve),
        // Charges approve; every refund of such a charge is declined, so
        // the refund's failure path can be exercised.
        "tok_refundFails" => TestCard {
            refund_verdict: RefundVerdict::Decline {
                message: "The card's issuer declined the refund.",
            },
            ..card("4242", "visa", "credit", Verdict::Approve)
        },
        "tok_chargeDeclined" => decline(
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        ),
        "tok_chargeDeclinedInsufficientFunds" => decline(
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        "tok_chargeDeclinedIncorrectCvc" => decline(
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        "tok_chargeDeclinedExpiredCard" => {
            decline("expired_card", "expired_card", "Your card has expired.")
        }
        "tok_chargeDeclinedProcessingError" => decline(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        _ => card("4242", "visa", "credit", Verdict::Approve),
    }
}

impl TestCard {
    /// The details a gateway returns once it has seen the card.
    pub(crate) fn details(&self) -> CardDetails {
        CardDetails {
            last4: self.last4.to_owned(),
            brand: self.brand.to_owned(),
            exp_month: EXP_MONTH,
            exp_year: EXP_YEAR,
            fingerprint: fingerprint(self.brand, self.last4, self.funding),
            country: self.country.to_owned(),
            funding: self.funding.to_owned(),
        }
    }
}

/// A stable identifier of the card, the same for every charge on it, as
/// gateways give so merchants can spot a card reused across customers.
/// 16 lower-case hex characters of a SHA-256 over the card's attributes.
fn fingerprint(brand: &str, last4: &str, funding: &str) -> String {
    let digest = Sha256::digest(format!("processor-sim:{brand}:{last4}:{funding}").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_sixteen_alphanumeric_characters_and_stable() {
        let first = lookup("tok_visa").details().fingerprint;
        assert_eq!(first.len(), 16);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(first, lookup("tok_visa").details().fingerprint);
    }

    #[test]
    fn different_cards_have_different_fingerprints() {
        let visa = lookup("tok_visa").details().fingerprint;
        let debit = lookup("tok_visa_debit").details().fingerprint;
        let mastercard = lookup("tok_mastercard").details().fingerprint;
        assert_ne!(visa, debit);
        assert_ne!(visa, mastercard);
        assert_ne!(debit, mastercard);
    }

    #[test]
    fn an_unknown_token_is_a_visa_that_approves() {
        let card = lookup("tok_made_up");
        assert_eq!(card, lookup("tok_visa"));
        assert_eq!(card.verdict, Verdict::Approve);
    }

    #[test]
    fn refund_fails_approves_charges_and_declines_refunds() {
        let card = lookup("tok_refundFails");
        assert_eq!(card.verdict, Verdict::Approve);
        assert!(matches!(card.refund_verdict, RefundVerdict::Decline { .. }));
        assert_eq!(card.details(), lookup("tok_visa").details());
        assert_eq!(lookup("tok_visa").refund_verdict, RefundVerdict::Accept);
    }

    #[test]
    fn a_declined_card_is_still_a_known_visa() {
        let card = lookup("tok_chargeDeclinedExpiredCard");
        assert_eq!(card.details(), lookup("tok_visa").details());
        assert!(matches!(
            card.verdict,
            Verdict::Decline {
                code: "expired_card",
                ..
            }
        ));
    }
}
