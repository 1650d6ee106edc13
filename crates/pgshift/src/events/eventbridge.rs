//! The events on Amazon EventBridge: `PutEvents` on the stack's bus (the default bus unless a template parameter
//! names one), source `pgshift`, the event's `detail-type` and `detail` as JSON, at most 10 entries a call, each at
//! most 256 KB ([PutEvents](https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html)). A
//! partial failure (`FailedEntryCount` > 0 with HTTP 200) is an error naming the entries' codes.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use futures_util::future::BoxFuture;

use super::{EventError, EventSink, RunAt};
use crate::contract::events::Event;

/// Entries a `PutEvents` call takes.
const PER_CALL: usize = 10;

pub struct EventBridgeEvents {
    pub client: Client,
    /// The bus's name or ARN.
    pub bus: String,
}

impl EventSink for EventBridgeEvents {
    fn send<'a>(&'a self, _run: RunAt<'a>, events: &'a [Event]) -> BoxFuture<'a, Result<(), EventError>> {
        Box::pin(async move {
            let err = |cause: String| EventError {
                to: format!("EventBridge bus {}", self.bus),
                cause,
            };
            for chunk in events.chunks(PER_CALL) {
                let entries: Vec<PutEventsRequestEntry> = chunk
                    .iter()
                    .map(|e| {
                        PutEventsRequestEntry::builder()
                            .source(&e.source)
                            .detail_type(&e.detail_type)
                            .detail(e.detail.to_string())
                            .event_bus_name(&self.bus)
                            .build()
                    })
                    .collect();
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| err(crate::awsclient::describe(&e)))?;
                if out.failed_entry_count() > 0 {
                    let codes: Vec<String> = out
                        .entries()
                        .iter()
                        .filter_map(|r| {
                            r.error_code()
                                .map(|c| format!("{c}: {}", r.error_message().unwrap_or("")))
                        })
                        .collect();
                    return Err(err(format!(
                        "{} of {} entries failed: {}",
                        out.failed_entry_count(),
                        chunk.len(),
                        codes.join("; ")
                    )));
                }
            }
            Ok(())
        })
    }
}
