//! The claim condition is one description (`ledger::claim::CLAIM_CONDITION`) that the in-memory
//! ledger evaluates and the DynamoDB ledger writes as a condition expression: this runs both on
//! the same stored records, claims and clocks (DynamoDB being moto) and proves they agree.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use cartpanda_redtrack::ledger::claim::{
    Claim, Ledger, MemoryLedger, Record, STATUS_FAILED, STATUS_IN_PROGRESS, STATUS_QUEUED,
    STATUS_SENT,
};
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;

const NOW_MS: i64 = 1_800_000_000_500;

/// Every kind of stored record around the claim's time: each status, lease over or live,
/// expired, expiring within the claim's own second or later, same conversion or another.
fn records() -> Vec<Option<Record>> {
    let mut out = vec![None];
    for status in [
        STATUS_IN_PROGRESS,
        STATUS_SENT,
        STATUS_QUEUED,
        STATUS_FAILED,
    ] {
        for lease_until_ms in [NOW_MS - 1, NOW_MS, NOW_MS + 60_000] {
            for expires_at_s in [NOW_MS / 1000 - 1, NOW_MS / 1000, NOW_MS / 1000 + 3600] {
                for fingerprint in ["fp-same", "fp-other"] {
                    out.push(Some(Record {
                        status: status.to_owned(),
                        fingerprint: fingerprint.to_owned(),
                        attempt: "old-attempt".to_owned(),
                        lease_until_ms,
                        expires_at_s,
                        sent_at_ms: (status == STATUS_SENT).then_some(NOW_MS - 5000),
                        ..Record::default()
                    }));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn memory_and_dynamodb_ledgers_claim_the_same_records() {
    let client = common::dynamo_client(&common::moto_endpoint());
    let table = common::create_table(&client).await;
    let dynamo = DynamoLedger::new(client.clone(), &table);
    for (n, record) in records().into_iter().enumerate() {
        let key = format!("evt#agree-{n}");
        let memory = MemoryLedger::default();
        if let Some(r) = &record {
            memory
                .records
                .lock()
                .unwrap()
                .insert(key.clone(), r.clone());
            let mut put = client
                .put_item()
                .table_name(&table)
                .item("pk", AttributeValue::S(key.clone()))
                .item("status", AttributeValue::S(r.status.clone()))
                .item("fingerprint", AttributeValue::S(r.fingerprint.clone()))
                .item("attempt", AttributeValue::S(r.attempt.clone()))
                .item(
                    "lease_until_ms",
                    AttributeValue::N(r.lease_until_ms.to_string()),
                )
                .item("expires_at", AttributeValue::N(r.expires_at_s.to_string()));
            if let Some(sent) = r.sent_at_ms {
                put = put.item("sent_at_ms", AttributeValue::N(sent.to_string()));
            }
            put.send().await.expect("seed record in moto");
        }
        let claim = Claim::new(
            key,
            "fp-same".to_owned(),
            "1",
            "order.paid",
            "Purchase",
            NOW_MS,
            NOW_MS + 10_000,
        );
        let in_memory = memory.claim(&claim).await.expect("memory claim");
        let in_dynamo = dynamo.claim(&claim).await.expect("dynamo claim");
        assert_eq!(in_memory, in_dynamo, "record {record:?}");
    }
}

/// Both ledgers keep the same story on a record: the input and click ID written with the claim,
/// the attempts and RedTrack's status written with how it ended, and a later claim of the same
/// conversion counting on from the attempts of the record it replaced (in DynamoDB, learnt from
/// the claim's own write).
#[tokio::test]
async fn memory_and_dynamodb_ledgers_keep_the_same_story() {
    use cartpanda_redtrack::ledger::claim::{Finish, Via};
    let client = common::dynamo_client(&common::moto_endpoint());
    let table = common::create_table(&client).await;
    let dynamo = DynamoLedger::new(client.clone(), &table);
    let memory = MemoryLedger::default();
    let key = "evt#story-1-purchase".to_owned();
    let claim = |now_ms: i64, via: Via| {
        Claim::new(
            key.clone(),
            "fp".to_owned(),
            "1",
            "order.paid",
            "Purchase",
            now_ms,
            now_ms + 10_000,
        )
        .with_origin(via, Some("cid-1"))
    };
    let ledgers: [&dyn Ledger; 2] = [&memory, &dynamo];
    let mut stories = Vec::new();
    for ledger in ledgers {
        let first = claim(NOW_MS, Via::Webhook);
        ledger.claim(&first).await.unwrap();
        let failed = first.after_send(3, Some(503));
        assert!(
            ledger
                .finish(&failed, Finish::Queued, NOW_MS, NOW_MS / 1000 + 60)
                .await
                .unwrap()
        );
        let queued = ledger.look_up(&key).await.unwrap().unwrap();
        let second = claim(NOW_MS + 1000, Via::Redrive);
        ledger.claim(&second).await.unwrap();
        assert_eq!(second.earlier_attempts(), 3);
        let sent = second.after_send(1, Some(200));
        assert!(
            ledger
                .finish(&sent, Finish::Sent, NOW_MS + 1000, NOW_MS / 1000 + 60)
                .await
                .unwrap()
        );
        let done = ledger.look_up(&key).await.unwrap().unwrap();
        stories
            .push([queued, done].map(|r| (r.status, r.via, r.attempts, r.rt_status, r.click_id)));
    }
    let cid = Some("cid-1".to_owned());
    assert_eq!(
        stories[0],
        [
            (
                STATUS_QUEUED.to_owned(),
                Some("webhook".to_owned()),
                Some(3),
                Some(503),
                cid.clone()
            ),
            (
                STATUS_SENT.to_owned(),
                Some("redrive".to_owned()),
                Some(4),
                Some(200),
                cid
            ),
        ]
    );
    assert_eq!(stories[0], stories[1]);
}
