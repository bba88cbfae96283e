//! The console's pages, one module each. A page with a live part has two
//! handlers: `page` (the whole page, the live part inside a `data-live`
//! region) and `live` (that region's content alone, for the script), both
//! drawing it with the same function.

pub(crate) mod attention;
pub(crate) mod audit;
pub(crate) mod dead_letters;
pub(crate) mod overview;
pub(crate) mod payment;
pub(crate) mod webhooks;
