//! Checking `#fragment` links in the built HTML. mdbook-linkcheck2 checks that
//! linked files exist but not that the fragment names an element, so a renamed
//! heading would silently break `chapter.html#old-heading`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::Result;

pub struct BrokenLink {
    pub page: PathBuf,
    pub href: String,
    pub why: String,
}

/// Every `<a href>` in every page under `site` whose target page or fragment is missing.
pub fn check_fragments(site: &Path) -> Result<(usize, Vec<BrokenLink>)> {
    let pages = crate::files::files_with_extension(site, "html")?;
    let mut ids: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for page in &pages {
        let text = std::fs::read_to_string(site.join(page))
            .map_err(|e| format!("{}: {e}", page.display()))?;
        ids.insert(
            page.clone(),
            attribute_values(&text, "id").into_iter().collect(),
        );
        texts.insert(page.clone(), text);
    }
    let mut checked = 0;
    let mut broken = Vec::new();
    for (page, text) in &texts {
        for href in anchor_hrefs(text) {
            let Some((target, fragment)) = internal_target(page, &href) else {
                continue;
            };
            checked += 1;
            let why = if target.extension().is_none_or(|e| e != "html") {
                if site.join(&target).exists() {
                    continue;
                }
                format!("{} does not exist", target.display())
            } else if let Some(page_ids) = ids.get(&target) {
                match fragment {
                    Some(f) if !f.is_empty() && !page_ids.contains(&f) => {
                        format!("{} has no element with id `{f}`", target.display())
                    }
                    _ => continue,
                }
            } else {
                format!("{} does not exist", target.display())
            };
            broken.push(BrokenLink {
                page: page.clone(),
                href,
                why,
            });
        }
    }
    Ok((checked, broken))
}

/// The values of `name="..."` attributes, HTML-unescaped for `&amp;`-style entities.
pub fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        if let Some(end) = rest.find('"') {
            values.push(unescape(&rest[..end]));
            rest = &rest[end..];
        }
    }
    values
}

fn anchor_hrefs(html: &str) -> Vec<String> {
    let mut hrefs = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<a ") {
        rest = &rest[at..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        hrefs.extend(attribute_values(&rest[..tag_end], "href"));
        rest = &rest[tag_end..];
    }
    hrefs
}

pub fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Resolves an href on `page` to a site-relative path and fragment, or `None`
/// for links that leave the site (`https:`, `mailto:`, ...).
fn internal_target(page: &Path, href: &str) -> Option<(PathBuf, Option<String>)> {
    if href.contains("://") || href.starts_with("//") || href.contains(':') {
        return None;
    }
    let (path, fragment) = match href.split_once('#') {
        Some((p, f)) => (p, Some(f.to_owned())),
        None => (href, None),
    };
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() {
        return Some((page.to_path_buf(), fragment));
    }
    let mut resolved = page.parent().unwrap_or(Path::new("")).to_path_buf();
    for part in Path::new(path).components() {
        match part {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(p) => resolved.push(p),
            _ => {}
        }
    }
    if path.ends_with('/') || resolved.as_os_str().is_empty() {
        resolved.push("index.html");
    }
    Some((resolved, fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_links_and_fragments() {
        let page = Path::new("part1/grow.html");
        assert_eq!(
            internal_target(page, "../primer.html#overcommit"),
            Some((PathBuf::from("primer.html"), Some("overcommit".into())))
        );
        assert_eq!(
            internal_target(page, "#here"),
            Some((PathBuf::from("part1/grow.html"), Some("here".into())))
        );
        assert_eq!(internal_target(page, "https://man7.org/x.html#y"), None);
        assert_eq!(internal_target(page, "mailto:a@b"), None);
    }

    #[test]
    fn reads_ids_and_hrefs() {
        let html = r#"<h2 id="a-b"><a class="header" href="x.html#a-b&amp;c">A</a></h2>"#;
        assert_eq!(attribute_values(html, "id"), vec!["a-b"]);
        assert_eq!(anchor_hrefs(html), vec!["x.html#a-b&c"]);
    }
}
