//! Pages of a list: every list fetches `limit + 1` rows and cuts them here.

/// Cuts `rows`, fetched with `limit + 1`, to one page; whether there is
/// more after it.
pub(crate) fn take_page<T>(rows: &mut Vec<T>, limit: i64) -> bool {
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    has_more
}
