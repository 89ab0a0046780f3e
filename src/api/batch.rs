//! `add`s that arrive together are written together: one transaction, one commit, for as many
//! as are waiting. Each `add` otherwise paid for its own transaction, and under a burst the
//! orders of one key waited for each other's commits on that key's balance row.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AddRefusal, NewOrder, Store, StoreError};

/// The most orders written in one transaction.
const MAX_BATCH: usize = 64;

type Answer = Result<Result<i64, AddRefusal>, StoreError>;

struct Waiting {
    order: NewOrder,
    refuse_if_open: bool,
    reply: oneshot::Sender<Answer>,
}

/// Queues of orders to insert, each drained by a writer task. A key's orders always go to the
/// same writer: batches of one key written by two writers at once would wait for each other on
/// the key's balance row (seen in `pg_stat_activity` as `Lock: transactionid`).
pub struct AddQueue {
    senders: Vec<mpsc::Sender<Waiting>>,
}

impl AddQueue {
    /// Starts `writers` tasks that take whatever is waiting and write it in one go.
    pub fn new(store: Arc<dyn Store>, writers: usize) -> AddQueue {
        let senders = (0..writers.max(1))
            .map(|_| {
                let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(write_batches(store.clone(), receiver));
                sender
            })
            .collect();
        AddQueue { senders }
    }

    /// Inserts one order as [`Store::insert_order`] does, with the others waiting beside it.
    pub async fn insert(&self, order: NewOrder, refuse_if_open: bool) -> Answer {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            order,
            refuse_if_open,
            reply,
        };
        let gone = || StoreError::Corrupt("the order writer stopped".to_string());
        let writer = waiting.order.key_id.unsigned_abs() as usize % self.senders.len();
        self.senders[writer]
            .send(waiting)
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Waiting>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A client that gave up (its request timed out or its connection closed) must not be
        // charged for an order it was never told about: those are dropped before the batch is
        // written, and if one leaves while it is being written, nothing is committed and the
        // batch is written again without it.
        loop {
            batch.retain(|waiting| !waiting.reply.is_closed());
            if batch.is_empty() {
                break;
            }
            let orders: Vec<(NewOrder, bool)> = batch
                .iter()
                .map(|w| (w.order.clone(), w.refuse_if_open))
                .collect();
            let abandoned = || batch.iter().any(|w| w.reply.is_closed());
            match store.insert_orders(&orders, &abandoned).await {
                Ok(Some(answers)) => {
                    for (waiting, answer) in batch.drain(..).zip(answers) {
                        let _ = waiting.reply.send(Ok(answer));
                    }
                }
                Ok(None) => continue,
                // An order that could not even be written (a value out of range) failed before
                // anything was committed: the others are tried on their own.
                Err(StoreError::Corrupt(_)) => {
                    for waiting in batch.drain(..) {
                        if waiting.reply.is_closed() {
                            continue;
                        }
                        let answer = store
                            .insert_order(&waiting.order, waiting.refuse_if_open)
                            .await;
                        let _ = waiting.reply.send(answer);
                    }
                }
                // Anything else may have happened at the commit, which may have landed: trying
                // again could write the orders twice, so every client hears of the failure.
                Err(e) => {
                    let text = e.to_string();
                    for waiting in batch.drain(..) {
                        let _ = waiting.reply.send(Err(StoreError::Batch(text.clone())));
                    }
                }
            }
            break;
        }
    }
}
