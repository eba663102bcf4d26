//! Query strings as `@coji/durably`'s handler reads them: repeatable parameters (`jobName`,
//! `status`), `label.<key>=<value>` pairs, and strict integers. axum's `Query` cannot read a
//! repeated key into a list, so the pairs are read here once and asked for by name.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// The decoded pairs of a query string, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        QueryPairs(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A non-empty value of `name`, or 400 `<name> query parameter is required`.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::bad_request(format!(
                "{name} query parameter is required"
            ))),
        }
    }

    /// `label.<key>=<value>` pairs.
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("label.").map(|k| (k.to_owned(), v.clone())))
            .collect()
    }

    /// An integer parameter in `0..=max`, when present and not empty.
    pub(crate) fn bounded(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(ApiError::bad_request(format!(
                    "Invalid {name}: must be a non-negative integer (at most {max})"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_labels_and_bounds() {
        let q = QueryPairs::parse(Some(
            "jobName=a&jobName=b%20c&label.env=prod&label.app.io%2Fname=x&limit=10&offset=",
        ));
        assert_eq!(q.all("jobName"), ["a", "b c"]);
        assert_eq!(q.labels().get("app.io/name").map(String::as_str), Some("x"));
        assert_eq!(q.bounded("limit", 100), Ok(Some(10)));
        assert_eq!(q.bounded("offset", 100), Ok(None));
        assert!(q.bounded("limit", 5).is_err());
        assert!(QueryPairs::parse(Some("limit=-1"))
            .bounded("limit", 5)
            .is_err());
        assert!(QueryPairs::parse(Some("limit=1e3"))
            .bounded("limit", 5000)
            .is_err());
        assert!(q.required("runId").is_err());
    }
}
