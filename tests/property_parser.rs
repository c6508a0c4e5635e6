//! The `-p NAME=VALUE` parser against a corpus (tests/corpus/properties.txt) and
//! 200,000 deterministic mutations of it: every input gets a value or an error,
//! never a panic. A property-based test in place of cargo fuzz, which needs a
//! nightly toolchain; add inputs that ever misbehave to the corpus.

use phasebox::systemd::properties::parse_assignment;

/// xorshift64*: the same mutations on every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"=",
    b":",
    b"%",
    b".",
    b"-",
    b"+",
    b" ",
    b"0",
    b"9",
    b"K",
    b"G",
    b"T",
    b"infinity",
    b"18446744073709551616",
    b"\xff",
    b"\xc3\xa9",
    b"\0",
    b"ms",
    b"min",
    b"h",
    b"d",
    b"SIG",
    b"yes",
    b"no",
];

fn mutate(rng: &mut Rng, corpus: &[&[u8]]) -> Vec<u8> {
    let mut input = corpus[rng.below(corpus.len())].to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(5) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if at < input.len() => {
                input.remove(at);
            }
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            3 => input.truncate(at),
            _ => {
                let other = corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                input.splice(at..at, other[from..].iter().copied());
            }
        }
    }
    input
}

fn parse_without_panic(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Err(panic) = std::panic::catch_unwind(|| parse_assignment(&text)) {
        panic!("-p {text:?} panicked: {panic:?}");
    }
}

#[test]
fn the_property_parser_never_panics() {
    let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/properties.txt")).unwrap();
    let corpus: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(corpus.len() > 50);
    let mut accepted = 0;
    for line in &corpus {
        parse_without_panic(line);
        accepted += usize::from(parse_assignment(&String::from_utf8_lossy(line)).is_ok());
    }
    // The corpus holds both: values phasebox takes and mistakes it must refuse.
    assert!(accepted > 30 && accepted < corpus.len(), "{accepted} of {} accepted", corpus.len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200_000 {
        parse_without_panic(&mutate(&mut rng, &corpus));
    }
}
