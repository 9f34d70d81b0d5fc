//! Paging: `ListHosts`, `ListPermits` and `GetHistory` each answer one page
//! and a `next_page_token` that asks for the next.

use std::future::Future;

use crate::error::Error;

/// Largest page asked for when medicctl lists everything (the server's
/// maximum).
const FULL_PAGE: u32 = 1000;

/// A call's answer that is one page of a listing.
pub(super) trait Page {
    /// What the listing lists.
    type Item;

    /// The page's items, and where the next page starts (empty: this page
    /// was the last).
    fn into_page(self) -> (Vec<Self::Item>, String);
}

/// Fetches page after page from `token` on, each of at most `page_size`
/// items, until `limit` items are in hand or the listing ends.
/// `fetch(token, size)` makes one call. Returns the items, and the token
/// that continues when more remain.
///
/// An empty page ends paging even with a token, so a server that keeps
/// handing out tokens cannot keep medicctl asking.
pub(super) async fn collect<P, F, Fut>(
    mut token: String,
    page_size: u32,
    limit: usize,
    mut fetch: F,
) -> Result<(Vec<P::Item>, Option<String>), Error>
where
    P: Page,
    F: FnMut(String, u32) -> Fut,
    Fut: Future<Output = Result<P, Error>>,
{
    let mut items = Vec::new();
    let mut more = false;
    while items.len() < limit {
        let remaining = u32::try_from(limit - items.len()).unwrap_or(u32::MAX);
        let (page, next) = fetch(token.clone(), page_size.min(remaining))
            .await?
            .into_page();
        let empty = page.is_empty();
        items.extend(page);
        token = next;
        more = !token.is_empty();
        if !more || empty {
            break;
        }
    }
    Ok((items, more.then_some(token)))
}

/// Every item of a listing, in pages of the largest size.
pub(super) async fn all<P, F, Fut>(fetch: F) -> Result<Vec<P::Item>, Error>
where
    P: Page,
    F: FnMut(String, u32) -> Fut,
    Fut: Future<Output = Result<P, Error>>,
{
    let (items, _) = collect(String::new(), FULL_PAGE, usize::MAX, fetch).await?;
    Ok(items)
}
