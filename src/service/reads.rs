//! The reads: one transaction, a page of them, KV entries.

use super::topics::check_name;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{validate_gid, Trans};
use crate::store::{Cursor, KvEntry, ListFilter};

/// Most transactions or KV entries on one page.
pub const MAX_PAGE: usize = 1000;

impl Service {
    /// The transaction `gid`, with its branches, if it exists.
    pub async fn query(&self, gid: &str) -> ServiceResult<Option<Trans>> {
        validate_gid(gid, self.limits.max_gid_len)?;
        Ok(self.engine.store.load(gid).await?)
    }

    /// One page of transactions, newest first, and the cursor of the next.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> ServiceResult<(Vec<Trans>, Option<Cursor>)> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::Invalid(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        Ok(self.engine.store.list(filter, after, limit).await?)
    }

    /// Up to `limit` entries of KV category `cat` after key `position`,
    /// and whether more follow.
    pub async fn kv_scan(
        &self,
        cat: &str,
        position: &str,
        limit: usize,
    ) -> ServiceResult<(Vec<KvEntry>, bool)> {
        check_name("cat", cat)?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::Invalid(format!(
                "limit must be 1 to {MAX_PAGE}, got {limit}"
            )));
        }
        Ok(self.engine.store.kv_scan(cat, position, limit).await?)
    }

    /// The entry `key` of KV category `cat`, or, with no key, the whole
    /// category (up to [`MAX_PAGE`] entries).
    pub async fn kv_query(&self, cat: &str, key: &str) -> ServiceResult<Vec<KvEntry>> {
        check_name("cat", cat)?;
        let store = &self.engine.store;
        Ok(if key.is_empty() {
            store.kv_scan(cat, "", MAX_PAGE).await?.0
        } else {
            store.kv_get(cat, key).await?.into_iter().collect()
        })
    }
}
