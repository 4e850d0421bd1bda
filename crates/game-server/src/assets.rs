//! The browser client, embedded in the binary: no build step, no files
//! to deploy beside it.

const INDEX: &str = include_str!("../assets/index.html");
const GAME_JS: &str = include_str!("../assets/game.js");
const STYLE: &str = include_str!("../assets/style.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// The asset named `name` and its content type.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "game.js" => Some((GAME_JS, "text/javascript; charset=utf-8")),
        "style.css" => Some((STYLE, "text/css; charset=utf-8")),
        "icon.svg" => Some((ICON, "image/svg+xml")),
        _ => None,
    }
}
