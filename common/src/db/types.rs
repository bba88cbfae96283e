//! Domain values as database columns.
//!
//! Rows carry [`PaymentStatus`], [`Currency`], [`CardToken`],
//! [`Kind`], [`OperationStatus`], [`EndpointStatus`] and
//! [`AttemptOutcome`] instead of strings: each is stored as
//! `text` and parsed when read, so a value the domain would reject (a
//! status nobody wrote, a corrupt currency) fails the read with a decode
//! error instead of travelling on as a string. The compile-time-checked
//! queries name these types in their column overrides
//! (`status AS "status: PaymentStatus"`).

use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::domain::{CardToken, Currency, Kind, OperationStatus, PaymentStatus};
use crate::webhooks::{AttemptOutcome, EndpointStatus};

/// `text` in the database, parsed with `$parse` when read and written as
/// `$as_str`.
macro_rules! text_column {
    ($ty:ty, $parse:expr, $as_str:expr) => {
        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok($parse(text)?)
            }
        }

        impl Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let text: &str = $as_str(self);
                <&str as Encode<Postgres>>::encode_by_ref(&text, buf)
            }
        }
    };
}

text_column!(
    PaymentStatus,
    PaymentStatus::from_str,
    |s: &PaymentStatus| s.as_str()
);
text_column!(Currency, Currency::parse, Currency::as_str);
text_column!(CardToken, CardToken::parse, CardToken::expose);
text_column!(Kind, Kind::from_str, |k: &Kind| k.as_str());
text_column!(
    OperationStatus,
    OperationStatus::from_str,
    |s: &OperationStatus| s.as_str()
);
text_column!(
    EndpointStatus,
    EndpointStatus::from_str,
    |s: &EndpointStatus| { <&str>::from(*s) }
);
text_column!(
    AttemptOutcome,
    AttemptOutcome::from_str,
    |o: &AttemptOutcome| o.as_str()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_column_type_is_text_to_postgres() {
        let text = <String as Type<Postgres>>::type_info();
        assert_eq!(<PaymentStatus as Type<Postgres>>::type_info(), text);
        assert_eq!(<Currency as Type<Postgres>>::type_info(), text);
        assert_eq!(<CardToken as Type<Postgres>>::type_info(), text);
        assert_eq!(<Kind as Type<Postgres>>::type_info(), text);
        assert_eq!(<OperationStatus as Type<Postgres>>::type_info(), text);
    }
}
