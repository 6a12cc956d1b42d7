//! Printing results: aligned tables for people, JSON for programs, one-line errors.

use firn_client::ClientError;
use firn_server::observe::code_name;

/// One line describing an error.
pub fn error_line(e: &anyhow::Error) -> String {
    let client_error = e.downcast_ref::<ClientError>().or_else(|| {
        match e.downcast_ref::<firn_query::QueryError>() {
            Some(firn_query::QueryError::Server(c)) => Some(c),
            _ => None,
        }
    });
    if let Some(ClientError::Status(s)) = client_error {
        return format!(
            "{}: {}",
            code_name(s.code()),
            s.message().replace('\n', " ")
        );
    }
    format!("{e:#}").replace('\n', " ")
}

/// Prints rows as an aligned text table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Prints a JSON value, pretty.
pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON value serialises")
    );
}

/// Formats epoch milliseconds as UTC.
pub fn time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}
