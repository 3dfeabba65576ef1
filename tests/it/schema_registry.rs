//! A Confluent-compatible schema registry for the Avro tests: the subset of
//! the REST API that producers' serializers and Freshet use (register a
//! schema under a subject, a subject's latest version, a schema by id),
//! served over HTTP on loopback. No registry server (Confluent's or
//! Karapace) can be installed on the test machines, so this stands in for
//! one; it answers with the registry's status codes and error bodies. It
//! can be stopped and started again on the same port with the same
//! schemas, to test a registry outage.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Schemas {
    /// Registered schemas; a schema's id is its index + 1.
    by_id: Vec<String>,
    /// (subject, id) for each version, in order.
    versions: Vec<(String, u32)>,
}

pub struct SchemaRegistry {
    pub url: String,
    port: u16,
    schemas: Arc<Mutex<Schemas>>,
    server: Option<JoinHandle<()>>,
}

impl SchemaRegistry {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the registry");
        let port = listener.local_addr().expect("address").port();
        let schemas = Arc::new(Mutex::new(Schemas::default()));
        let server = Some(tokio::spawn(serve(listener, schemas.clone())));
        Self { url: format!("http://127.0.0.1:{port}"), port, schemas, server }
    }

    /// Registers `schema` under `subject` (a new version); its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        let mut schemas = self.schemas.lock().expect("registry lock");
        let id = match schemas.by_id.iter().position(|s| s == schema) {
            Some(index) => index as u32 + 1,
            None => {
                schemas.by_id.push(schema.to_string());
                schemas.by_id.len() as u32
            }
        };
        schemas.versions.push((subject.to_string(), id));
        id
    }

    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind the registry again");
        self.server = Some(tokio::spawn(serve(listener, self.schemas.clone())));
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, schemas: Arc<Mutex<Schemas>>) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let schemas = schemas.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // A GET has no body: the request ends with its blank line.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = answer(&path, &schemas.lock().expect("registry lock"));
            let reason = if status == 200 { "OK" } else { "Not Found" };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

fn answer(path: &str, schemas: &Schemas) -> (u16, String) {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    if let Some(id) = path.strip_prefix("/schemas/ids/") {
        return match id.parse::<usize>().ok().and_then(|id| schemas.by_id.get(id.wrapping_sub(1))) {
            Some(schema) => (200, format!(r#"{{"schema":{}}}"#, quote(schema))),
            None => (404, r#"{"error_code":40403,"message":"Schema not found"}"#.to_string()),
        };
    }
    if let Some(subject) = path.strip_prefix("/subjects/").and_then(|p| p.strip_suffix("/versions/latest")) {
        let versions: Vec<u32> = schemas.versions.iter().filter(|(s, _)| s == subject).map(|(_, id)| *id).collect();
        return match versions.last() {
            Some(&id) => (
                200,
                format!(
                    r#"{{"subject":{},"version":{},"id":{id},"schema":{}}}"#,
                    quote(subject),
                    versions.len(),
                    quote(&schemas.by_id[id as usize - 1])
                ),
            ),
            None => (404, r#"{"error_code":40401,"message":"Subject not found"}"#.to_string()),
        };
    }
    (404, r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.to_string())
}
