//! The naming rules: the persisted name derived from a Rust item, and the generated type name.
//!
//! These rules decide what the store keys instances by, so they must never change: a new rule
//! would orphan every stored instance. The tests below pin them.

/// `snake_case` of a type or function name: `WebhookBatcher` → `webhook_batcher`,
/// `HTTPPoller` → `http_poller`, `token_refresher` → `token_refresher`.
pub(crate) fn snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                // The last capital of an acronym starts a new word: `HTTPPoller` → `http_poller`.
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                Some(_) => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `PascalCase` of a function name, for the type a function job becomes:
/// `token_refresher` → `TokenRefresher`, `sync_users_v2` → `SyncUsersV2`.
pub(crate) fn pascal_case(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len());
    let mut upper = true;
    for c in ident.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|&(d, c)| d <= (c.len() / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_is_pinned() {
        for (rust, persisted) in [
            ("token_refresher", "token_refresher"),
            ("WebhookBatcher", "webhook_batcher"),
            ("OrderProcessor", "order_processor"),
            ("HTTPPoller", "http_poller"),
            ("PollHTTP", "poll_http"),
            ("SyncUsersV2", "sync_users_v2"),
            ("V2Sync", "v2_sync"),
            ("Job", "job"),
            ("already_snake", "already_snake"),
        ] {
            assert_eq!(snake_case(rust), persisted, "{rust}");
        }
    }

    #[test]
    fn pascal_case_of_functions() {
        assert_eq!(pascal_case("token_refresher"), "TokenRefresher");
        assert_eq!(pascal_case("sync_users_v2"), "SyncUsersV2");
        assert_eq!(pascal_case("_private_job"), "PrivateJob");
    }

    #[test]
    fn closest_finds_typos_only() {
        let keys = ["every", "cron", "tz", "start_immediately", "retry", "name"];
        assert_eq!(closest("evry", keys), Some("every"));
        assert_eq!(closest("start_immediatly", keys), Some("start_immediately"));
        assert_eq!(closest("flush_after", keys), None);
    }
}
