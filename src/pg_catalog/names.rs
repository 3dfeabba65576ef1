//! How Postgres reads a name as written: dotted parts, double quotes
//! keeping case and dots, everything else folded to lower case.

/// A possibly qualified, possibly quoted name (`public."My T"`) split at
/// its dots, unquoted names folded to lower case.
pub fn split_name(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = name.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                parts.push(if was_quoted { std::mem::take(&mut current) } else { current.to_lowercase() });
                current.clear();
                was_quoted = false;
            }
            c => current.push(c),
        }
    }
    parts.push(if was_quoted { current } else { current.to_lowercase() });
    parts
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn quoted_parts_keep_case_and_dots() {
        assert_eq!(split_name("public.Orders"), vec!["public".to_string(), "orders".to_string()]);
        assert_eq!(split_name("\"My.T\""), vec!["My.T".to_string()]);
        assert_eq!(split_name("s.\"a\"\"b\""), vec!["s".to_string(), "a\"b".to_string()]);
    }
}
