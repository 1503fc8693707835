//! A cheap pre-scan that refuses deeply nested YAML before the parser sees it.
//!
//! The YAML parser itself has no nesting limit and slows down sharply on
//! thousands of nested flow collections, so a hostile file could stall the
//! controller before any serde-level limit applies. This scan is linear,
//! conservative (it errs towards the real depth) and only needs to be right
//! for files nested deeper than [`super::MAX_DEPTH`] levels.

use super::MAX_DEPTH;

/// Where nesting first exceeds `MAX_DEPTH`, as a 1-based (line, column).
pub(super) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    let mut quote: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        if flow == 0 && quote.is_none() && !trimmed.is_empty() && !trimmed.starts_with('#') {
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - - x` opens one sequence per dash.
            let dashes = trimmed.split(' ').take_while(|t| *t == "-").count().saturating_sub(1);
            if indents.len() + dashes > MAX_DEPTH {
                return Some((n + 1, indent + 1));
            }
        }
        let mut prev = ' ';
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' || i == 0 => break,
                    '"' | '\'' if flow > 0 || matches!(prev, ' ' | ':' | '[' | '{' | ',' | '-') => quote = Some(c),
                    '[' | '{' if flow > 0 || matches!(prev, ' ' | ':' | '-') || i == 0 => {
                        flow += 1;
                        if indents.len() + flow > MAX_DEPTH {
                            return Some((n + 1, line[..i].chars().count() + 1));
                        }
                    }
                    ']' | '}' if flow > 0 => flow -= 1,
                    _ => {}
                },
            }
            prev = c;
        }
        // A single-quoted or double-quoted scalar may span lines; keep state.
    }
    None
}

#[cfg(test)]
mod tests {
    use super::too_deep;

    #[test]
    fn ordinary_documents_pass() {
        let doc = "a:\n  b: [1, {c: \"[[[[\"}, '{{{']\n  d: |\n    text [ with { brackets\n# [[[[[[\n";
        assert_eq!(too_deep(doc), None);
    }

    #[test]
    fn deep_flow_and_block_nesting_are_found() {
        let flow = format!("k: {}1{}", "[".repeat(80), "]".repeat(80));
        // `k: ` opens the first level; the 64th bracket is the 65th level.
        assert_eq!(too_deep(&flow), Some((1, 3 + 64)));
        let mut block = String::new();
        for i in 0..70 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_eq!(too_deep(&block).map(|p| p.0), Some(65));
        let dashes = format!("{}x\n", "- ".repeat(70));
        assert!(too_deep(&dashes).is_some());
        assert_eq!(too_deep(&format!("k: {}1{}", "[".repeat(60), "]".repeat(60))), None);
    }
}
