//! Comparing two agents' reply streams: masking values that move between two asks, and
//! showing bytes in a failure message. Shared by the host fidelity test and its
//! real-guest arm.

/// Masks every run of ASCII digits, for values that move between two asks.
pub fn mask_digits(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_digit() {
            if out.last() != Some(&b'0') || !out.ends_with(b"0") {
                out.push(b'0');
            }
        } else {
            out.push(b);
        }
    }
    out
}

pub fn show(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if text.len() > 600 {
        format!("{}… ({} bytes)", &text[..600], bytes.len())
    } else {
        text
    }
}
