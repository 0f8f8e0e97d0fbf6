//! Output safety while a reply streams. The text shown is always a prefix of what
//! [`clean_output`] makes of the reply so far, cut where the words are settled: at the last
//! whitespace, and before anything that more text could still turn into markup (an open `<`),
//! a markdown link (an open `[`), or a phone or card number (a trailing run of digits and
//! separators). E-mail addresses and links hold no whitespace, so a word is never shown
//! before it is whole. The content filter runs on every settled word, so it fires at the
//! latest at each sentence end; once it fires nothing more is shown and the caller replaces
//! the text with the filtered reply.
//!
//! A sentence once shown whole is frozen: later words are cleaned on their own and joined to
//! it, so each piece costs the current sentence's cleaning, not the whole reply's (measured in
//! `bench/`: cleaning the whole reply again for each word cost ~0.3 ms of CPU per event).

use super::clean_output;

/// What one piece of the model's text changes on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing new can be shown yet.
    Hold,
    /// Append this to the text shown.
    Show(String),
    /// The content filter fired: the text shown must be replaced (and nothing more shown).
    Blocked,
}

#[derive(Debug, Default)]
pub struct StreamSafety {
    raw: String,
    shown: String,
    /// Byte length of `raw` last made safe: nothing changes until a new word is settled.
    settled_at: usize,
    /// `raw[..frozen_at]` is whole sentences, shown, cleaned into `frozen`.
    frozen_at: usize,
    frozen: String,
    /// Nothing more is shown: the filter fired, or the reply's cleaned text no longer
    /// extends what was shown (the final reply then replaces it).
    stopped: bool,
}

impl StreamSafety {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text shown so far.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Takes the next piece of the reply's raw text.
    pub fn push(&mut self, piece: &str) -> Step {
        self.raw.push_str(piece);
        if self.stopped {
            return Step::Hold;
        }
        // Settled: up to and including the last whitespace.
        let Some(cut) = self.raw.rfind(char::is_whitespace).map(|i| i + self.raw[i..].chars().next().map_or(1, char::len_utf8)) else {
            return Step::Hold;
        };
        if cut <= self.settled_at {
            return Step::Hold;
        }
        self.settled_at = cut;
        let clean = clean_output(&self.raw[self.frozen_at..cut]);
        if clean.blocked {
            self.stopped = true;
            return Step::Blocked;
        }
        let text = join(&self.frozen, &clean.text);
        let showable = &text[..showable_len(&text, self.shown.len())];
        if !showable.starts_with(&self.shown) {
            self.stopped = true;
            return Step::Hold;
        }
        if showable.len() == self.shown.len() {
            return Step::Hold;
        }
        let delta = showable[self.shown.len()..].to_string();
        self.shown = showable.to_string();
        self.freeze(cut);
        Step::Show(delta)
    }

    /// Freezes the sentences shown whole in `raw[frozen_at..cut]`: up to the last sentence end
    /// (after a letter) and its whitespace, when that much cleans to text already shown and
    /// nothing in it is still open.
    fn freeze(&mut self, cut: usize) {
        let region = &self.raw[self.frozen_at..cut];
        let bytes = region.as_bytes();
        let end =
            (1..bytes.len().saturating_sub(1)).rev().find(|&i| matches!(bytes[i], b'.' | b'!' | b'?') && bytes[i - 1].is_ascii_alphabetic() && bytes[i + 1].is_ascii_whitespace());
        let Some(end) = end.map(|i| self.frozen_at + i + 2) else { return };
        let clean = clean_output(&self.raw[self.frozen_at..end]);
        let frozen = join(&self.frozen, &clean.text);
        if clean.blocked || frozen.contains(['<', '[']) || !self.shown.starts_with(&frozen) {
            return;
        }
        self.frozen = frozen;
        self.frozen_at = end;
    }
}

/// Cleaned texts one after the other, as cleaning the whole would collapse the whitespace.
fn join(frozen: &str, more: &str) -> String {
    match (frozen.is_empty(), more.is_empty()) {
        (true, _) => more.to_string(),
        (_, true) => frozen.to_string(),
        _ => format!("{frozen} {more}"),
    }
}

/// How much of a cleaned text may be shown: everything before the first construct, after
/// `from`, that more text could still complete.
fn showable_len(text: &str, from: usize) -> usize {
    let from = from.min(text.len());
    let mut end = text.len();
    let rest = &text[from..];
    // An unclosed tag: `<` followed by what can start one, or `<` at the very end.
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|(_, n)| *n);
        let opens_tag = c == '<' && next.is_none_or(|n| n.is_ascii_alphabetic() || n == '!' || n == '/');
        if opens_tag || (c == '[' && open_link(&rest[i..])) {
            end = from + i;
            break;
        }
    }
    // A trailing run that could become a phone or card number.
    let head = &text[..end];
    let run_start = head.char_indices().rev().take_while(|(_, c)| c.is_ascii_digit() || matches!(c, ' ' | '(' | ')' | '.' | '+' | '-')).last().map(|(i, _)| i);
    if let Some(i) = run_start {
        if head[i..].chars().any(|c| c.is_ascii_digit()) {
            end = i.max(from.min(end));
        }
    }
    // Never end on a space: the next word brings its own.
    text[..end].trim_end().len().max(from.min(end))
}

/// Whether `text`, starting at a `[`, may still become a markdown link: its `]` has not come,
/// or ends the text, or opens a `(` that has not closed. (A redaction's `[email removed]` is
/// closed, and shown.)
fn open_link(text: &str) -> bool {
    let Some(close) = text.find(']') else { return true };
    let after = &text[close + 1..];
    after.is_empty() || (after.starts_with('(') && !after.contains(')'))
}

/// The event that makes what was shown equal to `final_text`, the reply as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    Same,
    Append(String),
    Replace(String),
}

pub fn reconcile(shown: &str, final_text: &str) -> Reconcile {
    match final_text.strip_prefix(shown) {
        Some("") => Reconcile::Same,
        Some(rest) => Reconcile::Append(rest.to_string()),
        None => Reconcile::Replace(final_text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `pieces` and returns every text the golfer saw, in order.
    fn screens(pieces: &[&str]) -> (Vec<String>, StreamSafety) {
        let mut s = StreamSafety::new();
        let mut seen = vec![];
        for p in pieces {
            if let Step::Show(_) = s.push(p) {
                seen.push(s.shown().to_string());
            }
        }
        (seen, s)
    }

    fn unsafe_fragment(screen: &str) -> Option<&'static str> {
        let lower = screen.to_lowercase();
        ["evil", "phish", "pro@", "@golf", "<", "**", "415", "555", "4111", "]("].into_iter().find(|f| lower.contains(f))
    }

    #[test]
    fn links_mail_markup_and_numbers_split_across_pieces_are_never_shown() {
        let pieces = [
            "Great tempo! Read ",
            "https://ev",
            "il.example/dr",
            "ill later. Mail pro",
            "@go",
            "lf.example or call +1 (4",
            "15) 555-01",
            "32 today. <",
            "scr",
            "ipt>x</scr",
            "ipt> Try the [dri",
            "ll](https://phi",
            "sh.example) and **sl",
            "ow** hands. Card 4111 1111 ",
            "1111 1111 ok. See https://www.usga.org/rules ",
        ];
        let (seen, s) = screens(&pieces);
        assert!(seen.len() > 4, "the reply streams: {seen:?}");
        for screen in &seen {
            assert_eq!(unsafe_fragment(screen), None, "shown: {screen:?}");
        }
        let whole: String = pieces.concat();
        let last = clean_output(&whole).text;
        assert!(last.starts_with(s.shown()), "shown {:?} is a prefix of the final {last:?}", s.shown());
        assert!(last.contains("https://www.usga.org/rules"));
    }

    #[test]
    fn bare_domains_and_script_targets_split_across_pieces_are_never_shown() {
        let pieces = [
            "Film it, then open ev",
            "il.exa",
            "mple/phi",
            "sh and ",
            "//ev",
            "il.example/x or jav",
            "ascript:al",
            "ert(1) or [cl",
            "ick](javas",
            "cript:alert(1)) or da",
            "ta:text/html;base6",
            "4,PHNj now. Rules at usg",
            "a.org/rules here. ",
        ];
        let (seen, s) = screens(&pieces);
        assert!(seen.len() > 2, "the reply streams: {seen:?}");
        for screen in &seen {
            let lower = screen.to_lowercase();
            for gone in ["evil", "phish", "javascript", "alert", "base64", "text/html"] {
                assert!(!lower.contains(gone), "{gone} shown: {screen:?}");
            }
        }
        let last = clean_output(&pieces.concat()).text;
        assert!(last.starts_with(s.shown()), "shown {:?} is a prefix of the final {last:?}", s.shown());
        assert!(s.shown().contains("click") && !s.shown().contains("click)"), "the link's text, nothing else: {:?}", s.shown());
        assert!(last.contains("usga.org/rules"), "{last:?}");
    }

    #[test]
    fn the_first_words_show_before_the_reply_ends() {
        let (seen, _) = screens(&["Keep your ", "head still ", "through impact."]);
        assert_eq!(seen.first().map(String::as_str), Some("Keep your"));
        assert_eq!(seen.last().map(String::as_str), Some("Keep your head still through"));
    }

    #[test]
    fn golf_numbers_show_once_a_word_follows() {
        let (seen, _) = screens(&["Your 7-iron carried 152 ", "yards at 84 mph. "]);
        assert_eq!(seen.last().map(String::as_str), Some("Your 7-iron carried 152 yards at 84 mph."));
    }

    #[test]
    fn sentences_shown_whole_are_frozen_and_later_ones_join_them() {
        let (seen, s) = screens(&["Keep it smooth. ", "Now the <b>", "grip</b> is light. Mail pro@golf.example ", "today. "]);
        assert!(s.frozen_at > 0, "the first sentences were frozen");
        assert_eq!(seen.last().map(String::as_str), Some("Keep it smooth. Now the grip is light. Mail [email removed] today."));
    }

    #[test]
    fn the_filter_stops_the_stream() {
        let mut s = StreamSafety::new();
        assert_eq!(s.push("Some players try beta "), Step::Show("Some players try beta".into()));
        assert_eq!(s.push("blockers before a round. "), Step::Blocked);
        assert_eq!(s.push("More text. "), Step::Hold);
    }

    #[test]
    fn reconciling_appends_or_replaces() {
        assert_eq!(reconcile("Keep", "Keep your head"), Reconcile::Append(" your head".into()));
        assert_eq!(reconcile("Keep your head", "Keep your head"), Reconcile::Same);
        assert_eq!(reconcile("Try beta", "Let's talk swing."), Reconcile::Replace("Let's talk swing.".into()));
    }

    /// Random words that never spell what the screens are checked for (a word like "evil" is
    /// text to keep, not a planted link).
    fn plain(pattern: &'static str) -> impl Strategy<Value = String> {
        pattern.prop_filter("a random word spelling a planted marker", |w| !["evil", "phish"].iter().any(|m| w.contains(m)))
    }

    proptest! {
        /// Whatever the pieces, each screen is a prefix of the cleaned whole and holds no tag,
        /// e-mail or foreign link.
        #[test]
        fn every_screen_is_a_safe_prefix_of_the_clean_reply(
            words in proptest::collection::vec(prop_oneof![
                plain("[a-z]{1,8}"), Just("<b>".to_string()), Just("</b>".to_string()), Just("<scr".to_string()),
                Just("ipt>".to_string()), Just("pro@golf.example".to_string()), Just("https://evil.example/x".to_string()),
                Just("[drill](https://phish.example)".to_string()), Just("555-0132".to_string()), Just("(415)".to_string()),
                Just("**".to_string()), plain("[a-z]{1,6}[.!?]"), Just("\n".to_string()), Just("evil.example/phish".to_string()),
                Just("//evil.example/x".to_string()), Just("javascript:alert(1)".to_string()), Just("[click](javascript:alert(1))".to_string()),
                Just("data:text/html;base64,PHNj".to_string()), Just("usga.org/rules".to_string()),
            ], 1..40),
            cuts in proptest::collection::vec(1usize..12, 1..40),
        ) {
            let whole = words.join(" ");
            let mut pieces = vec![];
            let mut rest = whole.as_str();
            for n in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let mut at = (*n).min(rest.len());
                while !rest.is_char_boundary(at) { at += 1; }
                pieces.push(&rest[..at]);
                rest = &rest[at..];
            }
            let (seen, _) = screens(&pieces);
            let last = clean_output(&whole);
            for screen in &seen {
                prop_assert!(!super::super::holds_markup(screen), "{screen:?}");
                prop_assert!(!screen.contains('@'), "{screen:?}");
                prop_assert!(!screen.contains("evil") && !screen.contains("phish"), "{screen:?}");
                prop_assert!(!screen.contains("javascript") && !screen.contains("base64") && !screen.contains("click)"), "{screen:?}");
                if !last.blocked {
                    prop_assert!(last.text.starts_with(screen.as_str()), "{screen:?} not a prefix of {:?}", last.text);
                }
            }
        }
    }
}
