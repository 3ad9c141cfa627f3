//! Turning logits into the next token: penalties, then top-k, top-p and
//! min-p truncation, then temperature and a seeded draw (the order llama.cpp
//! applies them in). Temperature 0 is greedy.

use crate::rng::Rng;

/// How to pick tokens. The defaults are llama.cpp's.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0: none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens (1: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Subtract from the logit of every recent token once (0: off).
    pub presence_penalty: f32,
    /// Subtract per occurrence of a recent token (0: off).
    pub frequency_penalty: f32,
    /// Fixes the random stream: same seed, same output.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// A sampling parameter outside its meaningful range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid sampling parameter {name} = {value}: {expected}")]
pub struct BadParam {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl SamplingParams {
    /// Rejects absurd values with a message naming the parameter.
    pub fn validate(&self) -> Result<(), BadParam> {
        let check = |ok: bool, name: &'static str, value: f32, expected: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(BadParam {
                    name,
                    value: value.to_string(),
                    expected,
                })
            }
        };
        let t = self.temperature;
        check(
            t.is_finite() && (0.0..=100.0).contains(&t),
            "temperature",
            t,
            "between 0 and 100",
        )?;
        let p = self.top_p;
        check(
            p.is_finite() && p > 0.0 && p <= 1.0,
            "top_p",
            p,
            "in (0, 1]",
        )?;
        let m = self.min_p;
        check(
            m.is_finite() && (0.0..=1.0).contains(&m),
            "min_p",
            m,
            "in [0, 1]",
        )?;
        let r = self.repeat_penalty;
        check(
            r.is_finite() && r > 0.0 && r <= 100.0,
            "repeat_penalty",
            r,
            "in (0, 100]",
        )?;
        let pp = self.presence_penalty;
        check(
            pp.is_finite() && pp.abs() <= 100.0,
            "presence_penalty",
            pp,
            "in [-100, 100]",
        )?;
        let fp = self.frequency_penalty;
        check(
            fp.is_finite() && fp.abs() <= 100.0,
            "frequency_penalty",
            fp,
            "in [-100, 100]",
        )?;
        Ok(())
    }

    /// Whether this picks deterministically without randomness.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// A sampler with its own random stream and reusable scratch space.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
    counts: Vec<(u32, u32)>,
}

/// The largest top-k a backend selects for a draw (`Sampler::device_top_k`);
/// larger ones take the whole row.
pub const MAX_DEVICE_TOP_K: usize = 256;

/// Index of the largest value; the lowest index wins ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Sampler {
            params,
            rng,
            candidates: Vec::new(),
            counts: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place by penalties),
    /// given the tokens so far (`history`, prompt included).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_penalties(logits, history);
        let p = &self.params;
        if p.is_greedy() {
            return argmax(logits);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit);
        self.draw()
    }

    /// Greedy without penalties: the backend's argmax of the raw logits
    /// (`Model::forward_greedy`) is this sampler's pick.
    pub fn plain_greedy(&self) -> bool {
        self.params.is_greedy() && self.no_penalties()
    }

    fn no_penalties(&self) -> bool {
        let p = &self.params;
        p.penalty_last_n == 0
            || (p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0)
    }

    /// The number of largest logits a draw of this sampler needs, when the
    /// backend may select them (`Model::forward_top_k`) instead of handing
    /// over the whole row: sampling (not greedy) with top-k on and no
    /// penalties (they could lift a token into the top k).
    pub fn device_top_k(&self) -> Option<usize> {
        let p = &self.params;
        (!p.is_greedy() && self.no_penalties() && (1..=MAX_DEVICE_TOP_K).contains(&p.top_k))
            .then_some(p.top_k)
    }

    /// Picks the next token from the row's largest logits as
    /// `smelt_backend::top_k_sorted` orders them (at least `top_k` of them,
    /// or the whole row if shorter): the token [`Sampler::sample`] picks from
    /// the whole row, with the same random draw, when
    /// [`Sampler::device_top_k`] is Some.
    pub fn sample_top_k(&mut self, top: &[(u32, f32)]) -> u32 {
        if top.is_empty() {
            return 0;
        }
        let k = self.params.top_k.max(1).min(top.len());
        self.candidates.clear();
        self.candidates.extend_from_slice(&top[..k]);
        self.draw()
    }

    /// Top-p, min-p, temperature and the draw over `self.candidates`
    /// (sorted, largest first, not empty).
    fn draw(&mut self) -> u32 {
        let p = &self.params;
        let c = &mut self.candidates;
        // top-p and min-p on the untempered distribution.
        let max = c[0].1;
        let weights: Vec<f64> = c.iter().map(|&(_, l)| ((l - max) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut keep = c.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, w) in weights.iter().enumerate() {
                cum += w / total;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            // weights[0] is the most likely token's (= 1 after shifting by max).
            let floor = p.min_p as f64 * weights[0];
            keep = keep.min(weights.iter().take_while(|&&w| w >= floor).count().max(1));
        }
        c.truncate(keep.max(1));

        // Temperature, then a draw.
        let t = p.temperature as f64;
        let scaled: Vec<f64> = c
            .iter()
            .map(|&(_, l)| ((l - max) as f64 / t).exp())
            .collect();
        let sum: f64 = scaled.iter().sum();
        let mut u = self.rng.next_f64() * sum;
        for (&(id, _), w) in c.iter().zip(&scaled) {
            if u < *w {
                return id;
            }
            u -= w;
        }
        c[c.len() - 1].0
    }

    fn apply_penalties(&mut self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        if p.penalty_last_n == 0
            || (p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0)
        {
            return;
        }
        let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
        let counts = &mut self.counts;
        counts.clear();
        for &t in recent {
            match counts.iter_mut().find(|(id, _)| *id == t) {
                Some((_, n)) => *n += 1,
                None => counts.push((t, 1)),
            }
        }
        for &(t, n) in counts.iter() {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if *l > 0.0 {
                *l /= p.repeat_penalty;
            } else {
                *l *= p.repeat_penalty;
            }
            *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() * 10.0 - 5.0) as f32)
            .collect()
    }

    #[test]
    fn greedy_is_argmax_and_ties_pick_lowest() {
        let logits = random_logits(1, 1000);
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        let best = logits.iter().cloned().fold(f32::MIN, f32::max);
        let got = s.sample(&mut logits.clone(), &[]);
        assert_eq!(logits[got as usize], best);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let logits = random_logits(2, 500);
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..Default::default()
            });
            (0..50)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn top_k_and_min_p_restrict_the_support() {
        let logits = random_logits(3, 300);
        let mut order: Vec<u32> = (0..300).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            seed: 5,
            ..Default::default()
        });
        for _ in 0..200 {
            let t = s.sample(&mut logits.clone(), &[]);
            assert!(order[..3].contains(&t));
        }
        // min_p = 1 keeps only the top token.
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 0,
            min_p: 1.0,
            seed: 5,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut logits.clone(), &[]), order[0]);
    }

    #[test]
    fn top_p_keeps_smallest_covering_set() {
        // Probabilities ~ 0.5, 0.25, 0.125, ...: top_p 0.7 keeps two tokens.
        let logits: Vec<f32> = (0..10)
            .map(|i| -(i as f32) * std::f32::consts::LN_2)
            .collect();
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.7,
            min_p: 0.0,
            seed: 9,
            ..Default::default()
        });
        let seen: std::collections::BTreeSet<u32> = (0..300)
            .map(|_| s.sample(&mut logits.clone(), &[]))
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn penalties_follow_their_definitions() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        });
        let mut logits = vec![4.0, -4.0, 1.0];
        s.apply_penalties(&mut logits, &[0, 0, 1]);
        assert_eq!(logits, vec![4.0 / 2.0 - 0.5 - 0.5, -8.0 - 0.25 - 0.5, 1.0]);
        // A repeated top token loses to the runner-up.
        let mut logits = vec![3.0, 2.0];
        assert_eq!(s.sample(&mut logits, &[0, 0, 0]), 1);
    }

    #[test]
    fn absurd_parameters_are_named() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "top_p");
        let bad = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().name, "temperature");
        assert!(SamplingParams::default().validate().is_ok());
    }

    #[test]
    fn drawing_from_the_device_top_k_picks_what_the_whole_row_picks() {
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 12.0 - 6.0
        };
        let mut checked = 0;
        for (temperature, top_k, top_p, min_p) in [
            (0.7, 40, 0.95, 0.05),
            (1.3, 5, 1.0, 0.0),
            (1.0, 1, 0.9, 0.0),
            (0.9, 256, 0.8, 0.1),
        ] {
            for seed in 0..20 {
                let p = SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    seed,
                    ..SamplingParams::default()
                };
                let (mut whole, mut top) = (Sampler::new(p.clone()), Sampler::new(p));
                assert_eq!(top.device_top_k(), Some(top_k));
                for _ in 0..10 {
                    // Coarse values: ties across the k-th place happen.
                    let logits: Vec<f32> =
                        (0..1000).map(|_| (next() * 4.0).round() / 4.0).collect();
                    let want = whole.sample(&mut logits.clone(), &[]);
                    let k = top.device_top_k().unwrap_or(0);
                    let got = top.sample_top_k(&smelt_backend::top_k_sorted(&logits, k));
                    assert_eq!(got, want, "t {temperature} k {top_k} p {top_p} seed {seed}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 800);
        let penalised = Sampler::new(SamplingParams {
            repeat_penalty: 1.1,
            ..SamplingParams::default()
        });
        assert_eq!(penalised.device_top_k(), None);
        assert!(
            Sampler::new(SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            })
            .plain_greedy()
        );
    }
}
