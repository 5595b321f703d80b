//! The reference client against scripted hostile agents.
//!
//! Each test is one behaviour from the fault catalogue (reference protocol.md §9): the
//! client must return the true answer or a typed error within its deadline, and its next
//! call must work.

mod common;

use std::time::Duration;

use common::hostile::{Hostile, Peer};
use common::SLACK;
use qga_harness::client::{Client, Error, ProtocolError, Stage};
use rstest::rstest;
use serde_json::{json, Value};
use tokio::time::Instant;

fn client(h: &Hostile) -> Client {
    Client::builder(h.path())
        .timeout(Duration::from_secs(3))
        .build()
}

/// The answer the scripted agent gives to `guest-get-host-name`.
fn host_name() -> Value {
    json!({"host-name": "scripted"})
}

async fn next_call_works(c: &mut Client) {
    let got = c.execute("guest-get-host-name", None).await;
    assert_eq!(got.unwrap(), host_name());
}

fn elapsed_within(start: Instant, limit: Duration) {
    let took = start.elapsed();
    assert!(took <= limit + SLACK, "took {took:?}, limit {limit:?}");
}

// ---- sync at connect -------------------------------------------------------------

#[tokio::test]
async fn stale_replies_waiting_at_connect_are_dropped() {
    let h = Hostile::start(|_, mut peer| async move {
        // Output of a previous session, still in the channel (qemu-guest.md §4 (c)).
        peer.send(
            b"\xff{\"return\": 12345}\n{\"return\": {}, \"id\": 99}\n\
              {\"return\": 1795703785173075000, \"id\": \"unread-fast\"}\n",
        )
        .await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    // Three stale lines and the agent's complaint about our 0xFF.
    assert_eq!(c.stats().discarded_replies, 4);
    assert_eq!(c.stats().syncs, 1);
}

#[tokio::test]
async fn stale_replies_arriving_during_the_sync_are_dropped() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        peer.flush_resets().await;
        // A delimited reply to some other sync, and a reply to some other command.
        peer.send(b"\xff{\"return\": 7}\n{\"return\": {\"host-name\": \"stale\"}}\n")
            .await;
        peer.answer(&sync, sync["arguments"]["id"].clone()).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_parser_holding_a_previous_clients_partial_request_is_reset_first() {
    // Until a 0xFF arrives, the agent's parser swallows everything (it is inside a string
    // left by the previous client), so a client that does not send 0xFF first never
    // gets an answer.
    let h = Hostile::start(|_, mut peer| async move {
        if peer.swallow_until_reset().await {
            peer.serve().await;
        }
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn sync_ids_are_fresh_and_unpredictable() {
    let h = Hostile::well_behaved();
    let mut c = client(&h);
    for _ in 0..5 {
        c.sync().await.unwrap();
    }
    let ids: Vec<u64> = h
        .requests()
        .iter()
        .map(|r| r["arguments"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{ids:?}");
    assert!(ids.iter().all(|&id| id <= i64::MAX as u64), "{ids:?}");
    // 63 random bits: five ids all below 2^40 would mean they are not random.
    assert!(ids.iter().any(|&id| id > 1 << 40), "{ids:?}");
}

#[tokio::test]
async fn every_sync_is_preceded_by_a_parser_reset() {
    let h = Hostile::start(|_, mut peer| async move {
        peer.echo_ids = false;
        peer.serve().await;
    });
    let mut c = client(&h);
    for _ in 0..3 {
        next_call_works(&mut c).await;
    }
    c.shutdown(None).await.unwrap();
    let logged = h.logged();
    assert_eq!(logged.len(), 8);
    for entry in logged {
        let is_sync = entry.request["execute"] == "guest-sync-delimited";
        assert_eq!(entry.flushed, is_sync, "{:?}", entry.request);
    }
}

#[tokio::test]
async fn garbage_during_the_sync_is_skipped() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        peer.send(b"[    1.234567] virtio_console: log line leaking into the port\n\x00\x01\x02\n{\"return\": \n")
            .await;
        peer.answer(&sync, sync["arguments"]["id"].clone()).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    assert!(c.stats().discarded_garbage >= 3);
}

#[tokio::test]
async fn a_sync_reply_under_another_id_is_not_taken() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        let n = sync["arguments"]["id"].clone();
        peer.flush_resets().await;
        // Our number, but as a float, as a string, and under a foreign id.
        let forged = format!(
            "{{\"return\": {n}.0, \"id\": {n}}}\n{{\"return\": \"{n}\", \"id\": {n}}}\n{{\"return\": {n}, \"id\": \"other\"}}\n"
        );
        peer.send(forged).await;
        peer.answer(&sync, n).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    assert_eq!(c.stats().discarded_replies, 4);
}

#[tokio::test]
async fn an_agent_that_refuses_the_sync_fails_the_call_with_its_error() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.request().await {
            peer.answer_error(
                &req,
                "CommandNotFound",
                "Command guest-sync-delimited has been disabled",
            )
            .await;
        }
    });
    let mut c = client(&h);
    let start = Instant::now();
    let e = c.ping().await.unwrap_err();
    // The command was never sent: the sync's error is not the command's answer.
    assert!(
        matches!(&e, Error::Protocol(ProtocolError::SyncRefused { class, desc })
            if class == "CommandNotFound" && desc.contains("guest-sync-delimited has been disabled")),
        "{e:?}"
    );
    assert_eq!(e.class(), "Protocol");
    elapsed_within(start, Duration::ZERO);
}

// ---- 0xFF noise and garbage --------------------------------------------------------

#[tokio::test]
async fn stray_0xff_bytes_between_replies_are_harmless() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            peer.send(b"\xff\xff\n\xff  \r\n\xff").await;
            peer.serve_one(&req).await;
        }
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_0xff_inside_a_reply_is_a_protocol_error_and_the_next_call_works() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        let reply = peer.reply_bytes(&req, &host_name());
        let (head, tail) = reply.split_at(10);
        peer.send([head, b"\xff", tail].concat()).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.execute("guest-get-host-name", None).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::CutOff { .. })),
        "{e:?}"
    );
    next_call_works(&mut c).await;
    assert_eq!(c.stats().syncs, 2, "resynced after the protocol error");
}

#[tokio::test]
async fn a_garbage_line_while_waiting_is_a_protocol_error_and_the_next_call_resyncs() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        peer.send(b"Welcome to the serial console\r\n").await;
        peer.serve_one(&req).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.execute("guest-get-host-name", None).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::NotJson { .. })),
        "{e:?}"
    );
    assert_eq!(e.class(), "Protocol");
    next_call_works(&mut c).await;
    assert_eq!(c.stats().syncs, 2);
}

#[tokio::test]
async fn non_object_json_lines_are_not_replies() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            peer.send(b"42\n[]\n\"return\"\nnull\n").await;
            peer.serve_one(&req).await;
        }
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    assert_eq!(c.stats().discarded_replies, 4 + 1);
}

/// `\n` → `\r\n`, as libvirt's test agent writes lines.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[tokio::test]
async fn replies_coalesced_in_one_write_with_crlf_endings() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        let mut all = common::hostile::E_FF.to_vec();
        all.extend(peer.reply_bytes(&sync, &sync["arguments"]["id"]));
        all.extend(b"{\"return\": {}, \"id\": 1}\n");
        peer.send(crlf(&all)).await;
        let Some(cmd) = peer.request().await else {
            return;
        };
        let mut all = b"{\"return\": {}}\n".to_vec();
        all.extend(peer.reply_bytes(&cmd, &host_name()));
        all.extend(b"{\"return\": {}, \"id\": 2}\n");
        peer.send(crlf(&all)).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    next_call_works(&mut c).await;
}

// ---- ids ---------------------------------------------------------------------------

#[tokio::test]
async fn replies_with_other_ids_are_dropped() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            let id = req["id"].as_u64().unwrap_or(0);
            let wrong = [
                json!({"return": {"host-name": "wrong"}, "id": id + 1}),
                json!({"return": {"host-name": "wrong"}, "id": id.to_string()}),
                json!({"return": {"host-name": "wrong"}, "id": [id]}),
                json!({"return": {"host-name": "wrong"}}),
            ];
            for w in wrong {
                peer.send(format!("{w}\n")).await;
            }
            peer.serve_one(&req).await;
        }
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    assert_eq!(c.stats().discarded_replies, 1 + 4);
}

#[tokio::test]
async fn only_wrong_ids_time_out_and_the_next_call_works() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        let id = req["id"].as_u64().unwrap_or(0);
        peer.send(format!("{{\"return\": {{}}, \"id\": {}}}\n", id ^ 1))
            .await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let start = Instant::now();
    let limit = Duration::from_millis(300);
    let e = c
        .execute_within("guest-ping", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    elapsed_within(start, limit);
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_raw_request_with_its_own_id_is_synced_first_and_matched_by_that_id() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(first) = peer.next_command().await else {
            return;
        };
        peer.serve_one(&first).await;
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        // A stale reply under the caller's id, before the sync reply: dropped.
        peer.flush_resets().await;
        peer.send(b"{\"return\": {\"host-name\": \"stale\"}, \"id\": \"mine\"}\n")
            .await;
        peer.answer(&sync, sync["arguments"]["id"].clone()).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    let ret = c
        .execute_raw(&json!({"execute": "guest-get-host-name", "id": "mine"}))
        .await
        .unwrap();
    assert_eq!(ret, host_name());
    assert_eq!(h.requests()[3]["id"], "mine");
}

#[tokio::test]
async fn a_repeated_reply_to_the_previous_command_is_not_taken() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(first) = peer.next_command().await else {
            return;
        };
        peer.answer(&first, json!({"host-name": "first"})).await;
        let Some(second) = peer.next_command().await else {
            return;
        };
        // The previous reply again, then the true one.
        peer.answer(&first, json!({"host-name": "first"})).await;
        peer.answer(&second, json!({"host-name": "second"})).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    assert_eq!(
        c.execute("guest-get-host-name", None).await.unwrap(),
        json!({"host-name": "first"})
    );
    assert_eq!(
        c.execute("guest-get-host-name", None).await.unwrap(),
        json!({"host-name": "second"})
    );
}

#[tokio::test]
async fn an_unsolicited_reply_between_calls_is_dropped() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(first) = peer.next_command().await else {
            return;
        };
        peer.serve_one(&first).await;
        peer.send(b"{\"return\": {\"host-name\": \"unsolicited\"}}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}, \"id\": 5}\n")
            .await;
        peer.serve().await;
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    next_call_works(&mut c).await;
}

#[rstest]
#[case::echoing_agent(true)]
#[case::agent_without_id_echo(false)]
#[tokio::test]
async fn a_late_reply_after_a_timeout_is_never_taken_for_the_next_answer(#[case] echo: bool) {
    let h = Hostile::start(move |_, mut peer| async move {
        peer.echo_ids = echo;
        let Some(first) = peer.next_command().await else {
            return;
        };
        // Answer only once the client has given up and resynced (in order, as qemu-ga
        // does): the late reply comes before the sync reply.
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        let late = peer.reply_bytes(&first, &json!({"host-name": "late"}));
        peer.send(late).await;
        peer.answer(&sync, sync["arguments"]["id"].clone()).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c
        .execute_within("guest-get-host-name", None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    next_call_works(&mut c).await;
    assert_eq!(c.ids_echoed(), Some(echo));
}

// ---- agents that do not echo ids ---------------------------------------------------

#[tokio::test]
async fn an_agent_without_id_echo_gets_a_sync_before_every_command() {
    let h = Hostile::start(|_, mut peer| async move {
        peer.echo_ids = false;
        peer.serve().await;
    });
    let mut c = client(&h);
    for _ in 0..3 {
        next_call_works(&mut c).await;
    }
    assert_eq!(c.ids_echoed(), Some(false));
    assert_eq!(
        h.commands(),
        [
            "guest-sync-delimited",
            "guest-get-host-name",
            "guest-sync-delimited",
            "guest-get-host-name",
            "guest-sync-delimited",
            "guest-get-host-name"
        ]
    );
}

#[tokio::test]
async fn an_echoing_agent_gets_one_sync_per_connection() {
    let h = Hostile::well_behaved();
    let mut c = client(&h);
    for _ in 0..3 {
        next_call_works(&mut c).await;
    }
    assert_eq!(c.ids_echoed(), Some(true));
    assert_eq!(
        h.commands(),
        [
            "guest-sync-delimited",
            "guest-get-host-name",
            "guest-get-host-name",
            "guest-get-host-name"
        ]
    );
}

// ---- timing: silence, drips -----------------------------------------------------------

#[tokio::test]
async fn a_silent_agent_times_out_at_the_sync_and_the_next_call_works() {
    let h = Hostile::start(|_, mut peer| async move {
        // The first handshake is never answered (agent not started yet).
        if peer.expect_sync().await.is_none() {
            return;
        }
        peer.serve().await;
    });
    let mut c = client(&h);
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let e = c
        .execute_within("guest-ping", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), "Timeout");
    assert!(start.elapsed() >= limit);
    elapsed_within(start, limit);
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn an_agent_that_hangs_on_the_command_times_out_and_the_next_call_works() {
    let h = Hostile::start(|_, mut peer| async move {
        if peer.next_command().await.is_none() {
            return;
        }
        peer.serve().await;
    });
    let mut c = client(&h);
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let e = c
        .execute_within("guest-fsfreeze-freeze", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    elapsed_within(start, limit);
    next_call_works(&mut c).await;
    assert_eq!(c.stats().syncs, 2);
}

#[tokio::test]
async fn a_call_abandoned_by_its_caller_leaves_the_next_call_in_step() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(first) = peer.next_command().await else {
            return;
        };
        // Answer the abandoned command only after the client's next handshake arrived.
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        peer.answer(&first, json!({"host-name": "abandoned"})).await;
        peer.answer(&sync, sync["arguments"]["id"].clone()).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        c.execute("guest-get-host-name", None),
    )
    .await;
    assert!(gave_up.is_err());
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_drip_cannot_extend_the_deadline() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        let reply = peer.reply_bytes(&req, &host_name());
        // About 60 bytes at 20 ms each: more than a second in all.
        peer.drip(reply, Duration::from_millis(20)).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let e = c
        .execute_within("guest-get-host-name", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    elapsed_within(start, limit);
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_reply_in_one_byte_writes_is_reassembled() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.request().await {
            peer.flush_resets().await;
            if let Some(ret) = Peer::default_return(&req) {
                let reply = peer.reply_bytes(&req, &ret);
                peer.drip(reply, Duration::from_micros(200)).await;
            }
        }
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
}

// ---- size limits ---------------------------------------------------------------------

#[tokio::test]
async fn an_oversize_reply_line_is_a_protocol_error_and_the_next_call_works() {
    let h = Hostile::start(|n, mut peer| async move {
        if n == 0 {
            let Some(req) = peer.next_command().await else {
                return;
            };
            let big = peer.reply_bytes(&req, &json!("A".repeat(100_000)));
            peer.send(big).await;
        }
        peer.serve().await;
    });
    let mut c = Client::builder(h.path()).max_reply_bytes(4096).build();
    let e = c.execute("guest-file-read", None).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::TooLarge { limit: 4096 })),
        "{e:?}"
    );
    // The client hangs up on a line it cannot keep (the rest of it may never end) and
    // the next call goes out on a new connection.
    next_call_works(&mut c).await;
    assert_eq!(c.stats().connects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_admits_an_exec_status_with_both_streams_at_the_16_mib_cap() {
    use base64::Engine as _;
    const CAP: usize = 16 << 20;
    let h = Hostile::start(|_, mut peer| async move {
        let out = base64::engine::general_purpose::STANDARD.encode(vec![b'o'; CAP]);
        let err = base64::engine::general_purpose::STANDARD.encode(vec![b'e'; CAP]);
        while let Some(req) = peer.next_command().await {
            let ret = json!({"exitcode": 0, "out-data": out, "err-data": err,
                "out-truncated": true, "err-truncated": true, "exited": true});
            peer.answer(&req, ret).await;
        }
    });
    let mut c = Client::builder(h.path())
        .timeout(Duration::from_secs(60))
        .build();
    let status = c.exec_status(1).await.unwrap();
    assert_eq!(status.stdout.len(), CAP);
    assert_eq!(status.stderr.len(), CAP);
    assert!(status.stdout_truncated && status.stderr_truncated);
}

#[tokio::test]
async fn endless_bytes_without_newline_fail_fast_and_a_later_0xff_resyncs() {
    let h = Hostile::start(|n, mut peer| async move {
        if n == 0 {
            if peer.next_command().await.is_none() {
                return;
            }
            // A megabyte with no newline, then nothing while this client stays.
            peer.send(vec![b'A'; 1 << 20]).await;
        }
        peer.serve().await;
    });
    let mut c = Client::builder(h.path()).max_reply_bytes(64 * 1024).build();
    let e = c.execute("guest-ping", None).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::TooLarge { .. })),
        "{e:?}"
    );
    next_call_works(&mut c).await;
    assert_eq!(c.stats().connects, 2, "the next call reconnects");
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_without_newline_keeps_memory_bounded() {
    let h = Hostile::start(|n, mut peer| async move {
        if n == 0 {
            let Some(sync) = peer.expect_sync().await else {
                return;
            };
            peer.answer(&sync, sync["arguments"]["id"].clone()).await;
            let chunk = vec![b'x'; 1 << 20];
            // 128 MiB of one endless line, or until the client hangs up.
            for _ in 0..128 {
                peer.send(&chunk).await;
            }
        }
        peer.serve().await;
    });
    let mut c = Client::builder(h.path())
        .max_reply_bytes(1 << 20)
        .timeout(Duration::from_secs(20))
        .build();
    c.sync().await.unwrap();
    let before = rss_bytes();
    let e = c.execute("guest-ping", None).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::TooLarge { .. })),
        "{e:?}"
    );
    // The client hangs up rather than read the rest of the flood; the next call connects
    // again.
    next_call_works(&mut c).await;
    assert_eq!(c.stats().connects, 2);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "grew by {grown} bytes");
}

#[tokio::test]
async fn a_reply_nested_a_hundred_thousand_deep_is_a_protocol_error() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        let deep = format!(
            "{{\"id\": {}, \"return\": {}{}}}\n",
            req["id"],
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        peer.send(deep).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.execute("guest-ping", None).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::NotJson { .. })),
        "{e:?}"
    );
    next_call_works(&mut c).await;
}

// ---- malformed replies to our id -----------------------------------------------------

#[rstest]
#[case::error_not_an_object(r#"{"error": "random error", "id": ID}"#, "MalformedError")]
#[case::error_without_class(r#"{"error": {"desc": "x"}, "id": ID}"#, "MalformedError")]
#[case::neither_return_nor_error(r#"{"id": ID}"#, "NoResult")]
#[case::both_return_and_error(
    r#"{"return": {}, "error": {"class": "GenericError", "desc": "x"}, "id": ID}"#,
    "BothResults"
)]
#[case::invalid_utf8("{\"return\": {\"host-name\": \"\u{FFFD}\"}, \"id\": ID}", "NotJson")]
#[case::not_json_after_all(r#"{"return": inf, "id": ID}"#, "NotJson")]
#[case::beyond_the_double_range(r#"{"return": {"t": 1e400}, "id": ID}"#, "NotJson")]
#[case::integer_beyond_64_bits(
    r#"{"return": {"t": 18446744073709551616}, "id": ID}"#,
    "ImpossibleNumber"
)]
#[case::integer_below_int64(r#"{"return": [-9223372036854775809], "id": ID}"#, "ImpossibleNumber")]
#[tokio::test]
async fn a_malformed_reply_to_our_id_is_a_protocol_error(
    #[case] template: &str,
    #[case] kind: &str,
) {
    let template = template.to_owned();
    let h = Hostile::start(move |_, mut peer| {
        let template = template.clone();
        async move {
            let Some(req) = peer.next_command().await else {
                return;
            };
            let mut line = template.replace("ID", &req["id"].to_string()).into_bytes();
            // Make the invalid-UTF-8 case really invalid: U+FFFD becomes a lone 0xC3.
            if let Some(at) = line.windows(3).position(|w| w == "\u{FFFD}".as_bytes()) {
                line.splice(at..at + 3, [0xC3]);
            }
            line.push(b'\n');
            peer.send(line).await;
            peer.serve().await;
        }
    });
    let mut c = client(&h);
    let e = c.execute("guest-get-host-name", None).await.unwrap_err();
    let Error::Protocol(p) = &e else {
        panic!("{e:?}")
    };
    assert!(format!("{p:?}").starts_with(kind), "{p:?}");
    next_call_works(&mut c).await;
}

#[rstest]
#[case::negative(json!({"size": -1}), true)]
#[case::largest(json!({"size": u64::MAX}), false)]
#[tokio::test]
async fn a_negative_uint64_member_is_a_protocol_error(#[case] ret: Value, #[case] refused: bool) {
    let h = Hostile::start(move |_, mut peer| {
        let ret = ret.clone();
        async move {
            let Some(req) = peer.next_command().await else {
                return;
            };
            peer.answer(&req, ret).await;
            peer.serve().await;
        }
    });
    let mut c = client(&h);
    let got = c.execute("guest-get-memory-block-info", None).await;
    match got {
        Err(Error::Protocol(ProtocolError::UnexpectedReturn { what, .. })) if refused => {
            assert!(what.contains("size is -1"), "{what}")
        }
        Ok(value) if !refused => assert_eq!(value, json!({"size": u64::MAX})),
        other => panic!("{other:?}"),
    }
    next_call_works(&mut c).await;
}

#[rstest]
#[case::legacy_disabled_class("CommandDisabled", "", "CommandDisabled")]
#[case::unknown_class("QgaCommandFailed", "boom", "Agent")]
#[case::frozen(
    "CommandNotFound",
    "Command guest-file-open has been disabled: the agent is in frozen state",
    "Frozen"
)]
#[case::not_found(
    "CommandNotFound",
    "The command guest-file-open has not been found",
    "CommandNotFound"
)]
#[tokio::test]
async fn agent_errors_keep_their_class_and_desc(
    #[case] class: &'static str,
    #[case] desc: &'static str,
    #[case] variant: &str,
) {
    let h = Hostile::start(move |_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        let mut line = json!({"id": req["id"], "error": {"class": class}});
        if !desc.is_empty() {
            line["error"]["desc"] = json!(desc);
        }
        peer.send(format!("{line}\n")).await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.file_open("/etc/hostname", None).await.unwrap_err();
    assert!(format!("{e:?}").starts_with(variant), "{e:?}");
    assert_eq!(e.class(), class);
    assert_eq!(e.desc(), desc);
    next_call_works(&mut c).await;
}

// ---- the connection going away ---------------------------------------------------------

#[tokio::test]
async fn eof_in_the_middle_of_a_reply_is_disconnected_and_the_next_call_reconnects() {
    let h = Hostile::start(|index, mut peer| async move {
        if index == 0 {
            let Some(req) = peer.next_command().await else {
                return;
            };
            let reply = peer.reply_bytes(&req, &host_name());
            peer.send(&reply[..reply.len() / 2]).await;
            return; // drops the connection
        }
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.execute("guest-get-host-name", None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Disconnected {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), "Disconnected");
    next_call_works(&mut c).await;
    assert_eq!(c.stats().connects, 2);
}

#[tokio::test]
async fn a_connection_closed_at_once_is_disconnected_at_the_sync() {
    let h = Hostile::start(|index, mut peer| async move {
        if index > 0 {
            peer.serve().await;
        }
    });
    let mut c = client(&h);
    let e = c.ping().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Disconnected {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_connection_closed_between_calls_is_replaced_before_sending() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let mut closed_tx = Some(closed_tx);
    let h = Hostile::start(move |index, mut peer| {
        let closed_tx = closed_tx.take();
        async move {
            if let Some(closed_tx) = closed_tx {
                let Some(req) = peer.next_command().await else {
                    return;
                };
                peer.serve_one(&req).await;
                drop(peer);
                let _ = closed_tx.send(());
                return;
            }
            let _ = index;
            peer.serve().await;
        }
    });
    let mut c = client(&h);
    next_call_works(&mut c).await;
    closed_rx.await.unwrap();
    // Whether the client notices the close before writing or from the failed write,
    // nothing reached the old connection, so it reconnects and sends once.
    next_call_works(&mut c).await;
    assert_eq!(c.stats().connects, 2);
    assert_eq!(
        h.commands(),
        [
            "guest-sync-delimited",
            "guest-get-host-name",
            "guest-sync-delimited",
            "guest-get-host-name"
        ]
    );
}

#[tokio::test]
async fn an_agent_restart_on_a_channel_without_eof_loses_the_command_and_recovers() {
    // virtio-serial: the agent dies with the command inside, nothing is visible on the
    // socket, and after the restart its fresh parser spits errors about the tail of
    // what it read (qemu-guest.md §4 (b)).
    let h = Hostile::start(|_, mut peer| async move {
        if peer.next_command().await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        peer.send(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword 'ments'\"}}\n\
              {\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a JSON object\"}}\n",
        )
        .await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c
        .execute_within("guest-get-host-name", None, Duration::from_millis(150))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    // Sent while the agent is down: answered once it is back.
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_missing_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::new(dir.path().join("absent.sock"));
    let e = c.ping().await.unwrap_err();
    let Error::Connect { source, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(e.class(), "Disconnected");
    assert!(e.desc().contains("absent.sock"), "{}", e.desc());
}

// ---- no-reply commands -----------------------------------------------------------------

#[tokio::test]
async fn shutdown_succeeds_when_the_agent_gets_past_it_without_an_error() {
    let h = Hostile::well_behaved();
    let mut c = client(&h);
    let start = Instant::now();
    c.shutdown(None).await.unwrap();
    // Proven by the reply to the sync sent behind it, not by waiting out the grace.
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    c.ping().await.unwrap();
    assert_eq!(
        h.commands(),
        [
            "guest-sync-delimited",
            "guest-shutdown",
            "guest-ping",
            "guest-ping"
        ]
    );
}

#[tokio::test]
async fn shutdown_succeeds_when_even_the_proving_ping_is_refused() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            if req["execute"] == "guest-ping" {
                peer.answer_error(
                    &req,
                    "CommandNotFound",
                    "Command guest-ping has been disabled",
                )
                .await;
            } else {
                peer.serve_one(&req).await;
            }
        }
    });
    let mut c = client(&h);
    let start = Instant::now();
    c.shutdown(None).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn shutdown_succeeds_when_the_channel_closes() {
    let h = Hostile::start(|index, mut peer| async move {
        if index == 0 {
            let _ = peer.next_command().await;
            return;
        }
        peer.serve().await;
    });
    let mut c = client(&h);
    c.shutdown(None).await.unwrap();
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn shutdown_succeeds_after_the_grace_period_of_silence_from_an_agent_without_id_echo() {
    // Without id echo no marker can prove the agent got past the command: silence is all
    // there is to go on.
    let h = Hostile::start(|_, mut peer| async move {
        peer.echo_ids = false;
        if peer.next_command().await.is_some() {
            peer.wait_eof().await;
        }
    });
    let grace = Duration::from_millis(300);
    let mut c = Client::builder(h.path()).no_reply_grace(grace).build();
    let start = Instant::now();
    c.shutdown(None).await.unwrap();
    assert!(start.elapsed() >= grace);
    elapsed_within(start, grace);
}

#[tokio::test]
async fn shutdown_into_silence_on_an_echoing_agent_is_a_timeout() {
    // The agent took the command and then answered nothing, not even the marker ping,
    // and the channel stays open: a hung agent or a guest that ignored the shutdown while
    // the VM stays up. Taking that silence for success is the bug of a client that reads
    // a timeout as a successful shutdown.
    let h = Hostile::start(move |_, mut peer| async move {
        if peer.next_command().await.is_some() {
            while peer.request().await.is_some() {}
        }
    });
    let mut c = Client::builder(h.path())
        .no_reply_grace(Duration::from_millis(50))
        .build();
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let e = c
        .execute_within("guest-shutdown", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(start.elapsed() >= limit);
    elapsed_within(start, limit);
}

#[tokio::test]
async fn shutdown_succeeds_when_the_call_deadline_ends_the_grace_period() {
    let echo = false;
    let h = Hostile::start(move |_, mut peer| async move {
        peer.echo_ids = echo;
        if peer.next_command().await.is_some() {
            // Silent from here on, without closing: a guest on its way down.
            while peer.request().await.is_some() {}
        }
    });
    let mut c = client(&h);
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    c.execute_within("guest-shutdown", None, limit)
        .await
        .unwrap();
    elapsed_within(start, limit);
    // The client does not trust the connection's state any more.
    let limit = Duration::from_millis(200);
    let e = c
        .execute_within("guest-ping", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
}

#[rstest]
#[case::echoing_agent(true)]
#[case::agent_without_id_echo(false)]
#[tokio::test]
async fn a_shutdown_error_is_an_error(#[case] echo: bool) {
    let h = Hostile::start(move |_, mut peer| async move {
        peer.echo_ids = echo;
        let Some(req) = peer.next_command().await else {
            return;
        };
        peer.answer_error(&req, "GenericError", "child process has failed to shutdown")
            .await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.shutdown(None).await.unwrap_err();
    assert!(matches!(e, Error::Agent(_)), "{e:?}");
    assert_eq!(e.desc(), "child process has failed to shutdown");
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn shutdown_while_frozen_is_the_frozen_error() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(req) = peer.next_command().await else {
            return;
        };
        peer.answer_error(
            &req,
            "CommandNotFound",
            "Command guest-shutdown has been disabled: the agent is in frozen state",
        )
        .await;
        peer.serve().await;
    });
    let mut c = client(&h);
    let e = c.shutdown(None).await.unwrap_err();
    assert!(matches!(e, Error::Frozen(_)), "{e:?}");
}

#[tokio::test]
async fn an_agent_that_answers_a_no_reply_command_anyway_is_fine() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            match Peer::default_return(&req) {
                None => peer.answer(&req, json!({})).await,
                Some(_) => peer.serve_one(&req).await,
            }
        }
    });
    let mut c = client(&h);
    c.suspend(qga_harness::client::SuspendMode::Ram)
        .await
        .unwrap();
    next_call_works(&mut c).await;
}

#[tokio::test]
async fn a_dead_agent_is_never_a_successful_shutdown() {
    let h = Hostile::start(|_, mut peer| async move { while peer.request().await.is_some() {} });
    let mut c = client(&h);
    let limit = Duration::from_millis(300);
    let e = c
        .execute_within("guest-shutdown", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(h.commands(), ["guest-sync-delimited"]);
}

// ---- side effects are never repeated -----------------------------------------------------

#[tokio::test]
async fn a_timed_out_exec_is_never_sent_again() {
    let h = Hostile::start(|_, mut peer| async move {
        if peer.next_command().await.is_none() {
            return;
        }
        peer.serve().await;
    });
    let mut c = client(&h);
    let exec = qga_harness::client::Exec::new("/bin/touch").arg("/tmp/once");
    let e = tokio::time::timeout(Duration::from_secs(10), async {
        c.execute_within(
            "guest-exec",
            Some(&exec.to_arguments()),
            Duration::from_millis(200),
        )
        .await
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(
        e,
        Error::Timeout {
            stage: Stage::Reply,
            ..
        }
    ));
    next_call_works(&mut c).await;
    next_call_works(&mut c).await;
    let execs = h.commands().iter().filter(|c| *c == "guest-exec").count();
    assert_eq!(execs, 1);
}

// ---- typed helpers over scripted replies -------------------------------------------------

#[tokio::test]
async fn exec_wait_polls_until_exited_and_decodes_the_output() {
    let h = Hostile::start(|_, mut peer| async move {
        let mut polls = 0;
        while let Some(req) = peer.next_command().await {
            let ret = match req["execute"].as_str() {
                Some("guest-exec") => json!({"pid": 4242}),
                Some("guest-exec-status") if polls < 2 => {
                    polls += 1;
                    json!({"exited": false})
                }
                Some("guest-exec-status") => json!({"exitcode": 1, "err-data": "ZXJyCg==",
                    "out-data": "b3V0Cg==", "err-truncated": false, "out-truncated": false, "exited": true}),
                _ => json!({}),
            };
            peer.answer(&req, ret).await;
        }
    });
    let mut c = client(&h);
    let exec = qga_harness::client::Exec::new("sh")
        .args(["-c", "echo out; echo err >&2; exit 1"])
        .capture(qga_harness::client::Capture::Separated);
    let status = c
        .exec_and_wait(&exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(status.exited);
    assert_eq!(status.exit_code, Some(1));
    assert_eq!(status.stdout, b"out\n");
    assert_eq!(status.stderr, b"err\n");
    assert_eq!(
        h.commands(),
        [
            "guest-sync-delimited",
            "guest-exec",
            "guest-exec-status",
            "guest-exec-status",
            "guest-exec-status"
        ]
    );
    assert_eq!(h.requests()[2]["arguments"], json!({"pid": 4242}));
}

#[tokio::test]
async fn exec_wait_gives_up_at_its_deadline() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            peer.answer(&req, json!({"exited": false})).await;
        }
    });
    let mut c = client(&h);
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let e = c.exec_wait(7, limit).await.unwrap_err();
    assert!(
        matches!(e, Error::Timeout { timeout, .. } if timeout == limit),
        "{e:?}"
    );
    elapsed_within(start, limit);
}

#[tokio::test]
async fn file_calls_encode_and_decode_base64() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            let ret = match req["execute"].as_str() {
                Some("guest-file-open") => json!(1000),
                Some("guest-file-write") => json!({"count": 16, "eof": false}),
                Some("guest-file-seek") => json!({"eof": false, "position": 0}),
                Some("guest-file-read") => {
                    json!({"count": 16, "buf-b64": "aGVsbG8gZnJvbSBob3N0Cg==", "eof": true})
                }
                _ => json!({}),
            };
            peer.answer(&req, ret).await;
        }
    });
    let mut c = client(&h);
    let handle = c.file_open("/tmp/qga-test.txt", Some("w+")).await.unwrap();
    assert_eq!(handle, 1000);
    let written = c.file_write(handle, b"hello from host\n").await.unwrap();
    assert_eq!(written.count, 16);
    let pos = c
        .file_seek(handle, 0, qga_harness::client::Whence::Set)
        .await
        .unwrap();
    assert_eq!(pos.position, 0);
    let read = c.file_read(handle, 4096).await.unwrap();
    assert_eq!(read.data, b"hello from host\n");
    assert!(read.eof);
    c.file_close(handle).await.unwrap();
    let reqs = h.requests();
    assert_eq!(
        reqs[2]["arguments"],
        json!({"handle": 1000, "buf-b64": "aGVsbG8gZnJvbSBob3N0Cg=="})
    );
    assert_eq!(
        reqs[3]["arguments"],
        json!({"handle": 1000, "offset": 0, "whence": "set"})
    );
}

#[tokio::test]
async fn a_file_read_whose_count_disagrees_with_its_data_is_a_protocol_error() {
    let h = Hostile::start(|_, mut peer| async move {
        while let Some(req) = peer.next_command().await {
            peer.answer(
                &req,
                json!({"count": 4096, "buf-b64": "aGkK", "eof": false}),
            )
            .await;
        }
    });
    let mut c = client(&h);
    let e = c.file_read(1000, 4096).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::UnexpectedReturn { .. })),
        "{e:?}"
    );
}

#[test]
fn a_client_moved_to_another_runtime_reconnects_there() {
    let server = tokio::runtime::Runtime::new().unwrap();
    let h = server.block_on(async { Hostile::well_behaved() });
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = client(&h);
    first.block_on(next_call_works(&mut c));
    // The first runtime is gone with its timer and its socket registration.
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        next_call_works(&mut c).await;
        next_call_works(&mut c).await;
    });
    assert_eq!(c.stats().connects, 2);
    drop(h);
}

#[test]
fn the_blocking_client_runs_calls_without_a_runtime_of_its_own() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let h = runtime.block_on(async { Hostile::well_behaved() });
    let mut c = qga_harness::client::BlockingClient::with_socket(h.path()).unwrap();
    assert_eq!(c.execute("guest-get-host-name", None).unwrap(), host_name());
    let info = c.run(async |c| c.ping().await);
    info.unwrap();
    assert_eq!(
        c.execute_raw(&json!({"execute": "guest-sync", "arguments": {"id": 3}}))
            .unwrap(),
        json!(3)
    );
    drop(h);
}
