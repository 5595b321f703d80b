//! `qga-harness fuzz` campaigns measured against known clients: the socat one-liner (bugs
//! of several kinds, each with a minimal scenario that reproduces it) and the reference
//! client's mutants (each a known bug a campaign should kill). They take minutes of wall
//! time with real client processes, so they are ignored in the default run:
//! `cargo test --release --test fuzz_campaign -- --ignored --nocapture`
//! (`FUZZ_CAMPAIGN_SECONDS` caps each mutant's campaign, default 15; a mutant's campaign
//! stops at its first finding and prints the time to kill, a Markdown table row).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qga_harness::fuzz::campaign::{self, Campaign};
use qga_harness::internals::{Mutation, ReferenceInProcess};
use qga_harness::runner::{
    Client, MockLauncher, Placeholder, RunOptions, Template, DEFAULT_MAX_RSS_KIB,
};

fn options(client: Client, seed: u64) -> RunOptions {
    RunOptions {
        client,
        launcher: Arc::new(MockLauncher::default()),
        jobs: 1,
        seed,
        max_rss_kib: DEFAULT_MAX_RSS_KIB,
        artifacts: None,
        time_scale: 1,
    }
}

fn campaign(client: Client, seed: u64, seconds: u64, out: &Path) -> Campaign {
    Campaign {
        options: options(client, seed),
        seed,
        cases: None,
        duration: Some(Duration::from_secs(seconds)),
        out: out.to_owned(),
        stop_at_first: false,
    }
}

async fn run(campaign: &Campaign) -> campaign::Summary {
    campaign::run(campaign, |_| {}, std::future::pending())
        .await
        .expect("the findings are written")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of wall time with a real client process per step"]
async fn socat_one_liner_shows_three_kinds_that_reproduce() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let command = format!(
        "{} {{socket}} {{request}} {{timeout_s}}",
        root.join("clients/socat/oneshot.sh").display()
    );
    let template = Template::parse(&command, "--client", Placeholder::ONESHOT).expect("template");
    let out = tempfile::tempdir().expect("tempdir");
    let summary = run(&campaign(Client::Oneshot(template), 1, 60, out.path())).await;
    eprintln!("{}", summary.line());
    let reproduced: Vec<&str> = summary
        .kinds
        .values()
        .filter(|k| k.reproduced == 3 && k.file.as_ref().is_some_and(|f| f.is_file()))
        .map(|k| k.kind.as_str())
        .collect();
    assert!(
        reproduced.len() >= 3,
        "kinds that reproduced 3 of 3: {reproduced:?} ({})",
        summary.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes of wall time: a campaign per mutant"]
async fn campaigns_kill_the_mutants() {
    let seconds: u64 = std::env::var("FUZZ_CAMPAIGN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut survivors: Vec<Mutation> = Vec::new();
    for mutation in Mutation::ALL {
        let out = tempfile::tempdir().expect("tempdir");
        let client = Client::InProcess(Arc::new(ReferenceInProcess::mutant(mutation)));
        let mut campaign = campaign(client, 1, seconds, out.path());
        campaign.stop_at_first = true;
        let summary = run(&campaign).await;
        match summary.kinds.values().min_by_key(|k| k.first_after) {
            Some(first) => eprintln!(
                "| `{}` | {:.1} s | {} | `{}` | {}/3 |",
                mutation.name(),
                first.first_after.as_secs_f64(),
                first.first_case,
                first.kind,
                first.reproduced
            ),
            None => {
                eprintln!(
                    "| `{}` | survived {seconds} s | {} | - | - |",
                    mutation.name(),
                    summary.cases
                );
                survivors.push(mutation);
            }
        }
    }
    assert!(
        survivors.is_empty(),
        "mutants no campaign killed: {survivors:?}"
    );
}
