//! Topics (contract §8.1): a topic is the KV entry `topics`/`<name>`
//! holding the JSON list of its subscribers. Every change is a
//! version-guarded write, retried on a conflict, so concurrent subscribes
//! all land. Msg steps addressed `topic://<name>` are fanned out from Redis
//! when the msg is saved, so every replica sees a change at once and a
//! deleted topic is gone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::validate_url;
use crate::store::StoreError;

/// The KV category of topics.
pub const TOPICS: &str = "topics";

/// One subscriber of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Subscriber {
    url: String,
    #[serde(default)]
    remark: String,
}

/// Checks a topic or KV category name: 1 to 128 letters, digits, `_`, `-`
/// or `.`.
pub fn check_name(what: &str, v: &str) -> ServiceResult {
    if v.is_empty() {
        return Err(ServiceError::Invalid(format!("empty {what}")));
    }
    if v.len() > 128
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(ServiceError::Invalid(format!(
            "{what} {v:?} must be 1 to 128 letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(())
}

impl Service {
    /// A topic's subscribers and version (0 when it does not exist).
    async fn read_topic(&self, topic: &str) -> ServiceResult<(Vec<Subscriber>, u64)> {
        match self.engine.store.kv_get(TOPICS, topic).await? {
            None => Ok((Vec::new(), 0)),
            Some(e) => {
                let subs = serde_json::from_str(&e.value).map_err(|err| {
                    ServiceError::Internal(format!("topic {topic} holds bad JSON: {err}"))
                })?;
                Ok((subs, e.version))
            }
        }
    }

    /// Applies `change` to a topic's list until its version-guarded write
    /// lands (a concurrent change makes it read again).
    async fn update_topic(
        &self,
        topic: &str,
        change: impl Fn(&mut Vec<Subscriber>, u64) -> ServiceResult,
    ) -> ServiceResult {
        let store = &self.engine.store;
        for _ in 0..20 {
            let (mut subs, version) = self.read_topic(topic).await?;
            change(&mut subs, version)?;
            let value =
                serde_json::to_string(&subs).map_err(|e| ServiceError::Internal(e.to_string()))?;
            match store
                .kv_put(TOPICS, topic, version, Some(&value), self.engine.now_ms())
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::VersionConflict { .. } | StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Ongoing(format!(
            "topic {topic} is changing too fast; try again"
        )))
    }

    /// Adds `url` to `topic`, creating it.
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> ServiceResult {
        check_name("topic", topic)?;
        if url.is_empty() {
            return Err(ServiceError::Invalid("empty url".into()));
        }
        validate_url(url)?;
        self.check_allowed(url)?;
        let max = self.max_topic_subscribers;
        self.update_topic(topic, |subs, _| {
            if subs.iter().any(|x| x.url == url) {
                return Err(ServiceError::Conflict("this url exists".into()));
            }
            if subs.len() >= max {
                return Err(ServiceError::Invalid(format!(
                    "topic {topic} has {max} subscribers, the most one topic may have (trans.max_topic_subscribers, DTX_TRANS_MAX_TOPIC_SUBSCRIBERS)"
                )));
            }
            subs.push(Subscriber {
                url: url.to_owned(),
                remark: remark.to_owned(),
            });
            Ok(())
        })
        .await?;
        info!(topic = %topic, "subscribed");
        Ok(())
    }

    /// Removes `url` from `topic`.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> ServiceResult {
        check_name("topic", topic)?;
        if url.is_empty() {
            return Err(ServiceError::Invalid("empty url".into()));
        }
        self.update_topic(topic, |subs, version| {
            if version == 0 {
                return Err(ServiceError::NotFound("no such a topic".into()));
            }
            if subs.is_empty() {
                return Err(ServiceError::NotFound("this topic is empty".into()));
            }
            let before = subs.len();
            subs.retain(|x| x.url != url);
            if subs.len() == before {
                return Err(ServiceError::NotFound("no such an url".into()));
            }
            Ok(())
        })
        .await
    }

    /// Deletes a topic; msgs can no longer name it.
    pub async fn delete_topic(&self, name: &str) -> ServiceResult {
        check_name("topic", name)?;
        let store = &self.engine.store;
        for _ in 0..20 {
            let Some(e) = store.kv_get(TOPICS, name).await? else {
                return Err(ServiceError::NotFound(format!("no such a topic: {name}")));
            };
            match store
                .kv_put(TOPICS, name, e.version, None, self.engine.now_ms())
                .await
            {
                Ok(_) => {
                    info!(topic = %name, "topic deleted");
                    return Ok(());
                }
                Err(StoreError::VersionConflict { .. } | StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Ongoing(format!(
            "topic {name} is changing too fast; try again"
        )))
    }

    /// The subscriber URLs of every topic named by `topic://` in
    /// `actions`; an unknown topic or one without subscribers is an error.
    pub(super) async fn resolve_topics(
        &self,
        actions: impl Iterator<Item = &str>,
    ) -> ServiceResult<BTreeMap<String, Vec<String>>> {
        let mut out = BTreeMap::new();
        for name in actions.filter_map(|a| a.strip_prefix("topic://")) {
            if out.contains_key(name) {
                continue;
            }
            let (subs, _) = self.read_topic(name).await?;
            if subs.is_empty() {
                return Err(ServiceError::Invalid(format!("topic not found: {name}")));
            }
            out.insert(name.to_owned(), subs.into_iter().map(|x| x.url).collect());
        }
        Ok(out)
    }
}
