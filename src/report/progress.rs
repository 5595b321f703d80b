//! Live progress on a terminal: a bar with cases done of total, the verdict counts so far,
//! the elapsed time and an estimate of what is left, and the cases running now; each
//! finished case's plain line printed above it. When the output is not a terminal the
//! plain lines of [`HumanReport`](super::HumanReport) are used instead.

use std::collections::BTreeSet;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::human::case_line;
use crate::runner::{CaseResult, Verdict};

/// The bar and what it counts.
#[derive(Debug)]
pub struct LiveProgress {
    bar: ProgressBar,
    counts: [usize; 5],
    running: BTreeSet<String>,
}

impl LiveProgress {
    /// A bar on stdout for `total` cases.
    #[must_use]
    pub fn new(total: usize) -> LiveProgress {
        LiveProgress::with_target(total, ProgressDrawTarget::stdout())
    }

    /// A bar drawn to `target` (a hidden or in-memory target for tests).
    #[must_use]
    pub fn with_target(total: usize, target: ProgressDrawTarget) -> LiveProgress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        let style = ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} {prefix} | {elapsed_precise} elapsed, ~{eta} left\n{wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        let progress = LiveProgress {
            bar,
            counts: [0; 5],
            running: BTreeSet::new(),
        };
        progress.redraw();
        progress
    }

    /// A case started.
    pub fn started(&mut self, id: &str) {
        self.running.insert(id.to_owned());
        self.redraw();
    }

    /// A case finished: its line goes above the bar.
    pub fn finished(&mut self, result: &CaseResult) {
        self.running.remove(&result.id);
        if let Some(at) = Verdict::ALL.iter().position(|v| *v == result.verdict) {
            self.counts[at] += 1;
        }
        self.bar.println(case_line(result));
        self.bar.inc(1);
        self.redraw();
    }

    /// The verdict counts so far, as the bar shows them.
    pub fn counts_text(&self) -> String {
        Verdict::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(v, n)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The cases running now, as the bar shows them.
    pub fn running_text(&self) -> String {
        if self.running.is_empty() {
            return String::new();
        }
        let shown: Vec<&str> = self.running.iter().take(8).map(String::as_str).collect();
        let more = self.running.len().saturating_sub(shown.len());
        format!(
            "running: {}{}",
            shown.join(" "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }

    fn redraw(&self) {
        // The cases running first, the counts last: each setter may draw a frame, and the
        // last one drawn after a case ends must not still list that case as running.
        self.bar.set_message(self.running_text());
        self.bar.set_prefix(self.counts_text());
    }

    /// Removes the bar (before the closing report is printed).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::ClientRun;

    fn result(id: &str, verdict: Verdict) -> CaseResult {
        CaseResult {
            id: id.to_owned(),
            title: String::new(),
            category: "sync".to_owned(),
            requirement: String::new(),
            file: "scenarios/sync/1.json".into(),
            seed: 1,
            verdict,
            error: None,
            unsupported: None,
            judgement: None,
            run: ClientRun::default(),
            elapsed_ms: 1.0,
            transcript: None,
            timeline: None,
        }
    }

    #[test]
    fn the_bar_lists_the_running_cases_and_counts_the_finished_ones() {
        let mut live = LiveProgress::with_target(3, ProgressDrawTarget::hidden());
        live.started("sync.1");
        live.started("sync.4");
        assert_eq!(live.running_text(), "running: sync.1 sync.4");
        assert_eq!(live.counts_text(), "");

        live.finished(&result("sync.1", Verdict::Pass));
        assert_eq!(live.running_text(), "running: sync.4");
        assert_eq!(live.counts_text(), "1 PASS");

        live.finished(&result("sync.4", Verdict::Fail));
        assert_eq!(live.running_text(), "");
        assert_eq!(live.counts_text(), "1 PASS, 1 FAIL");
        assert_eq!(live.bar.position(), 2);
    }

    #[test]
    fn many_running_cases_are_shown_as_eight_and_a_count() {
        let mut live = LiveProgress::with_target(10, ProgressDrawTarget::hidden());
        for n in 1..=10 {
            live.started(&format!("hostile.{n:02}"));
        }
        assert_eq!(
            live.running_text(),
            "running: hostile.01 hostile.02 hostile.03 hostile.04 hostile.05 hostile.06 \
             hostile.07 hostile.08 and 2 more"
        );
    }
}
