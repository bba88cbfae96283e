//! Lists, every one of them: one envelope ([`List`]), one `limit` check
//! ([`PageSize::limit`]), one cursor parse ([`Cursor`]) and one page cut
//! ([`List::page`]).
//!
//! Every list is Stripe's shape, `{"object": "list", "url", "has_more",
//! "data"}`, newest (or, for the operator's queues, oldest) first. A list
//! fetches one row more than it shows ([`Limit::fetch`]), so `has_more` is
//! known without a count. A cursor that is not an id of the listed kind is
//! `400 invalid_parameter`; one that names nothing of the caller's is
//! `400 resource_missing`; both name the parameter.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;

/// The `object` of a list: always `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    List,
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    /// Always `list`.
    object: ListObject,
    /// Where the list is read.
    url: String,
    /// Whether items follow this page.
    has_more: bool,
    data: Vec<T>,
}

impl<T> List<T> {
    /// The page in `rows`, fetched with [`Limit::fetch`]: the row past the
    /// limit is cut, and says that there is more.
    pub fn page(url: impl Into<String>, mut rows: Vec<T>, limit: Limit) -> Self {
        let shown = usize::try_from(limit.0).unwrap_or(usize::MAX);
        let has_more = rows.len() > shown;
        rows.truncate(shown);
        Self {
            object: ListObject::List,
            url: url.into(),
            has_more,
            data: rows,
        }
    }

    /// A page whose store cut it and knows whether there is more (a list
    /// read in either direction cuts before it turns the rows around).
    pub fn cut(url: impl Into<String>, data: Vec<T>, has_more: bool) -> Self {
        Self {
            object: ListObject::List,
            url: url.into(),
            has_more,
            data,
        }
    }

    /// A list shown whole (its size is bounded where it is stored).
    pub fn whole(url: impl Into<String>, data: Vec<T>) -> Self {
        Self {
            object: ListObject::List,
            url: url.into(),
            has_more: false,
            data,
        }
    }

    /// The same page, each item turned into its answer.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> List<U> {
        List {
            object: self.object,
            url: self.url,
            has_more: self.has_more,
            data: self.data.into_iter().map(f).collect(),
        }
    }

    /// [`List::map`] with a turn that can fail.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<List<U>, E> {
        Ok(List {
            object: self.object,
            url: self.url,
            has_more: self.has_more,
            data: self.data.into_iter().map(f).collect::<Result<_, _>>()?,
        })
    }

    pub fn has_more(&self) -> bool {
        self.has_more
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn into_data(self) -> Vec<T> {
        self.data
    }
}

/// How many items a page shows, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(i64);

impl Limit {
    /// Items shown.
    pub fn shown(self) -> i64 {
        self.0
    }

    /// Rows to fetch: one more than shown, so that [`List::page`] knows
    /// whether there are more.
    pub fn fetch(self) -> i64 {
        self.0 + 1
    }

    /// [`Limit::fetch`] as a count, for a list gathered in memory.
    pub fn fetch_len(self) -> usize {
        usize::try_from(self.fetch()).unwrap_or(usize::MAX)
    }
}

/// A list's `limit`: its default and its largest.
#[derive(Debug, Clone, Copy)]
pub struct PageSize {
    default: i64,
    max: i64,
}

impl PageSize {
    /// A merchant's lists: 1 to 100, default 10 (DESIGN.md §5, as Stripe).
    pub const MERCHANT: Self = Self {
        default: 10,
        max: 100,
    };
    /// An operator's lists: 1 to 1000, default 100.
    pub const OPERATOR: Self = Self {
        default: 100,
        max: 1000,
    };

    /// `limit` as given (absent: the default); a `400` naming `limit` when
    /// it is outside 1 to the largest.
    pub fn limit(self, raw: Option<i64>) -> Result<Limit, ApiError> {
        let limit = raw.unwrap_or(self.default);
        if (1..=self.max).contains(&limit) {
            Ok(Limit(limit))
        } else {
            Err(ApiError::invalid(
                "limit",
                "invalid_limit",
                format!("`limit` must be a whole number from 1 to {}.", self.max),
            ))
        }
    }
}

/// Where a page starts: just after an item (older, for a newest-first
/// list) or just before one (newer; still shown in the list's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor<I> {
    StartingAfter(I),
    EndingBefore(I),
}

impl<I> Cursor<I>
where
    I: FromStr,
    I::Err: fmt::Display,
{
    /// `starting_after` and `ending_before` as given, at most one of them.
    pub fn parse(
        starting_after: Option<&str>,
        ending_before: Option<&str>,
    ) -> Result<Option<Self>, ApiError> {
        match (starting_after, ending_before) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "ending_before",
                "conflicting_parameters",
                "Pass `starting_after` or `ending_before`, not both.",
            )),
            (Some(raw), None) => Ok(Some(Self::StartingAfter(id("starting_after", raw)?))),
            (None, Some(raw)) => Ok(Some(Self::EndingBefore(id("ending_before", raw)?))),
            (None, None) => Ok(None),
        }
    }

    /// For a list that pages one way: `starting_after` as given.
    pub fn starting_after(raw: Option<&str>) -> Result<Option<I>, ApiError> {
        raw.map(|raw| id("starting_after", raw)).transpose()
    }
}

impl<I> Cursor<I> {
    /// The parameter it came from.
    pub fn param(&self) -> &'static str {
        match self {
            Self::StartingAfter(_) => "starting_after",
            Self::EndingBefore(_) => "ending_before",
        }
    }

    pub fn id(&self) -> &I {
        match self {
            Self::StartingAfter(id) | Self::EndingBefore(id) => id,
        }
    }

    /// The same side of another position (the cursor's row, once looked
    /// up).
    pub fn at<P>(&self, position: P) -> Cursor<P> {
        match self {
            Self::StartingAfter(_) => Cursor::StartingAfter(position),
            Self::EndingBefore(_) => Cursor::EndingBefore(position),
        }
    }
}

/// A cursor that is a well-formed id of nothing the caller can list: `what`
/// is the list's items (`"payments"`).
pub fn no_such_cursor(param: &'static str, what: &str) -> ApiError {
    ApiError::invalid(
        param,
        "resource_missing",
        format!("`{param}` names none of your {what}: pass the id of one of them."),
    )
}

fn id<I>(param: &'static str, raw: &str) -> Result<I, ApiError>
where
    I: FromStr,
    I::Err: fmt::Display,
{
    raw.parse().map_err(|err: I::Err| {
        ApiError::invalid(
            param,
            "invalid_parameter",
            format!("`{param}` is not an id of this list: {err}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::domain::PaymentId;

    #[test]
    fn a_page_cuts_the_row_past_the_limit_and_says_there_is_more() {
        let limit = PageSize::MERCHANT.limit(Some(2)).expect("limit");
        assert_eq!(limit.fetch(), 3);
        let page = List::page("/v1/things", vec![1, 2, 3], limit);
        assert!(page.has_more());
        assert_eq!(page.data(), &[1, 2]);
        let last = List::page("/v1/things", vec![1, 2], limit);
        assert!(!last.has_more());
        assert_eq!(last.data(), &[1, 2]);
    }

    #[test]
    fn limits_are_checked_against_the_lists_bounds() {
        assert_eq!(PageSize::MERCHANT.limit(None).expect("default").shown(), 10);
        assert_eq!(
            PageSize::OPERATOR.limit(None).expect("default").shown(),
            100
        );
        assert!(PageSize::MERCHANT.limit(Some(101)).is_err());
        assert!(PageSize::MERCHANT.limit(Some(0)).is_err());
        assert!(PageSize::OPERATOR.limit(Some(1000)).is_ok());
        assert!(PageSize::OPERATOR.limit(Some(1001)).is_err());
    }

    #[test]
    fn cursors_are_one_side_and_an_id_of_the_listed_kind() {
        let id = PaymentId::new().to_string();
        let after = Cursor::<PaymentId>::parse(Some(&id), None).expect("after");
        assert_eq!(after.map(|c| c.param()), Some("starting_after"));
        let before = Cursor::<PaymentId>::parse(None, Some(&id)).expect("before");
        assert_eq!(before.map(|c| c.param()), Some("ending_before"));
        assert!(Cursor::<PaymentId>::parse(Some(&id), Some(&id)).is_err());
        assert!(Cursor::<PaymentId>::parse(Some("pay_123"), None).is_err());
        assert_eq!(Cursor::<PaymentId>::parse(None, None).expect("none"), None);
    }
}
