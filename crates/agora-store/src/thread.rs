//! Threading (RFC 5256): ORDEREDSUBJECT and REFERENCES over the cached envelope fields,
//! giving the threads as a forest (IMAP THREAD writes it in RFC 5256's nested notation,
//! the webmail shows it as conversations).

use std::collections::HashMap;

use crate::summary::EnvelopeFields;

use crate::sort::{base_subject, casemap, sent_date};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    OrderedSubject,
    References,
}

impl Algorithm {
    /// The algorithm named by a THREAD command atom (case-insensitive).
    pub fn from_atom(atom: &str) -> Option<Algorithm> {
        if atom.eq_ignore_ascii_case("ORDEREDSUBJECT") {
            Some(Algorithm::OrderedSubject)
        } else if atom.eq_ignore_ascii_case("REFERENCES") {
            Some(Algorithm::References)
        } else {
            None
        }
    }
}

pub struct ThreadItem<'a> {
    /// Sequence number or UID, printed as is.
    pub id: u32,
    /// For tie-breaks.
    pub seq: u32,
    pub internal_date: i64,
    pub envelope: &'a EnvelopeFields,
}

/// What both algorithms need of a message.
struct Msg {
    id: u32,
    /// Sent date, then sequence number: the sibling order of RFC 5256.
    key: (i64, u32),
    /// Case-mapped base subject.
    subject: String,
    reply: bool,
}

/// A message (index into the messages) or a dummy, in an arena: trees are walked without
/// recursion so that a long reply chain cannot exhaust the stack.
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'m> {
    msgs: &'m [Msg],
    nodes: Vec<Node>,
    roots: Vec<usize>,
}

/// The threads of a set of messages: a forest in an arena, so that a long reply chain
/// is walked (and dropped) without recursion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Threads {
    pub nodes: Vec<ThreadNode>,
    /// The first message (or dummy) of each thread, in thread order.
    pub roots: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNode {
    /// The message's id as given in its `ThreadItem`; None for a dummy (a parent known
    /// only from references, or the common parent of a subject's threads).
    pub id: Option<u32>,
    /// Replies, in order (indexes into `nodes`).
    pub children: Vec<usize>,
}

/// Threads `items` by `algorithm`.
pub fn thread(algorithm: Algorithm, items: &[ThreadItem<'_>]) -> Threads {
    let msgs: Vec<Msg> = items
        .iter()
        .map(|it| {
            let (subject, reply) = base_subject(it.envelope.subject.as_deref().unwrap_or(""));
            Msg {
                id: it.id,
                key: (sent_date(it.envelope, it.internal_date), it.seq),
                subject: casemap(&subject),
                reply,
            }
        })
        .collect();
    let mut forest = Forest { msgs: &msgs, nodes: Vec::new(), roots: Vec::new() };
    match algorithm {
        Algorithm::OrderedSubject => forest.ordered_subject(),
        Algorithm::References => forest.references(items),
    }
    Threads {
        nodes: forest
            .nodes
            .iter()
            .map(|n| ThreadNode { id: n.msg.map(|m| msgs[m].id), children: n.children.clone() })
            .collect(),
        roots: forest.roots,
    }
}

impl Threads {
    /// RFC 5256's nested notation, as IMAP's THREAD data carries it: "(3 2)(1)",
    /// "(1)(2 (7)(12)(13))(4)" — a single reply follows its parent, several are each
    /// parenthesised; empty when there are no messages.
    pub fn nested(&self) -> String {
        enum Out {
            Text(&'static str),
            Id(u32),
            Node(usize),
        }
        let mut out = String::new();
        let mut stack = Vec::new();
        // A stack of what is left to write, pushed in reverse.
        let push_list = |stack: &mut Vec<Out>, list: &[usize]| {
            for &n in list.iter().rev() {
                stack.push(Out::Text(")"));
                stack.push(Out::Node(n));
                stack.push(Out::Text("("));
            }
        };
        push_list(&mut stack, &self.roots);
        while let Some(op) = stack.pop() {
            match op {
                Out::Text(t) => out.push_str(t),
                Out::Id(id) => out.push_str(&id.to_string()),
                Out::Node(n) => {
                    let node = &self.nodes[n];
                    match (node.id, node.children.as_slice()) {
                        (Some(_), [only]) => {
                            stack.push(Out::Node(*only));
                            stack.push(Out::Text(" "));
                        }
                        (Some(_), []) => {}
                        (Some(_), kids) => {
                            push_list(&mut stack, kids);
                            stack.push(Out::Text(" "));
                        }
                        (None, kids) => push_list(&mut stack, kids),
                    }
                    if let Some(id) = node.id {
                        stack.push(Out::Id(id));
                    }
                }
            }
        }
        out
    }
}

impl Forest<'_> {
    fn add(&mut self, msg: Option<usize>) -> usize {
        self.nodes.push(Node { msg, parent: None, children: Vec::new() });
        self.nodes.len() - 1
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    /// True if `a` is `b` or one of its ancestors: then making `a` a child of `b` is a loop.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        // A childless node is nobody's ancestor: this keeps long reply chains linear.
        if a != b && self.nodes[a].children.is_empty() {
            return false;
        }
        let mut cur = Some(b);
        while let Some(n) = cur {
            if n == a {
                return true;
            }
            cur = self.nodes[n].parent;
        }
        false
    }

    /// Sort key of a node: its message's, or a dummy's earliest child's (RFC 5256 uses the
    /// dummy's first child after sorting, which is the same thing).
    fn key(&self, n: usize) -> (i64, u32) {
        match self.nodes[n].msg {
            Some(m) => self.msgs[m].key,
            None => self.nodes[n].children.iter().map(|&c| self.key(c)).min().unwrap_or((i64::MAX, u32::MAX)),
        }
    }

    fn sort_children(&mut self, n: usize) {
        let mut kids = std::mem::take(&mut self.nodes[n].children);
        kids.sort_by_cached_key(|&c| self.key(c));
        self.nodes[n].children = kids;
    }

    fn sort_roots(&mut self) {
        let mut roots = std::mem::take(&mut self.roots);
        roots.sort_by_cached_key(|&r| self.key(r));
        self.roots = roots;
    }

    /// ORDEREDSUBJECT: one thread per base subject; its earliest message is the parent of all
    /// the others, and threads go by the date of that first message.
    fn ordered_subject(&mut self) {
        let msgs = self.msgs;
        let mut order: Vec<usize> = (0..msgs.len()).collect();
        order.sort_by(|&a, &b| msgs[a].subject.cmp(&msgs[b].subject).then(msgs[a].key.cmp(&msgs[b].key)));
        for m in 0..msgs.len() {
            self.add(Some(m));
        }
        for group in order.chunk_by(|&a, &b| msgs[a].subject == msgs[b].subject) {
            if let Some((&first, rest)) = group.split_first() {
                self.roots.push(first);
                for &m in rest {
                    self.link(first, m);
                }
            }
        }
        self.sort_roots();
    }

    /// REFERENCES (RFC 5256 §3, after JWZ), steps (1) to (6).
    fn references(&mut self, items: &[ThreadItem<'_>]) {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&m| items[m].seq);
        let mut by_id: HashMap<String, usize> = HashMap::new();

        // (1) Containers and parent/child links from the message-ids.
        for m in order {
            let e = items[m].envelope;
            // (1A) A missing Message-ID or a duplicate gets a container nobody can refer to.
            let own = match e.message_id.as_deref().and_then(|v| msg_ids(v).into_iter().next()) {
                Some(id) => match by_id.get(&id) {
                    Some(&c) if self.nodes[c].msg.is_none() => {
                        self.nodes[c].msg = Some(m);
                        c
                    }
                    Some(_) => self.add(Some(m)),
                    None => {
                        let c = self.add(Some(m));
                        by_id.insert(id, c);
                        c
                    }
                },
                None => self.add(Some(m)),
            };
            let mut refs = e.references.as_deref().map(msg_ids).unwrap_or_default();
            if refs.is_empty() {
                refs = e.in_reply_to.as_deref().map(msg_ids).unwrap_or_default();
                refs.truncate(1);
            }
            let mut ref_nodes = Vec::with_capacity(refs.len());
            for id in refs {
                let c = match by_id.get(&id) {
                    Some(&c) => c,
                    None => {
                        let c = self.add(None);
                        by_id.insert(id, c);
                        c
                    }
                };
                ref_nodes.push(c);
            }
            // (1B) Chain the references, keeping links made earlier and never making a loop.
            for pair in ref_nodes.windows(2) {
                let (parent, child) = (pair[0], pair[1]);
                if self.nodes[child].parent.is_none() && !self.is_ancestor(child, parent) {
                    self.link(parent, child);
                }
            }
            // (1C) The message's own parent is its last reference; an existing parent came from
            // another message's (maybe truncated) References, so it is dropped first.
            self.unlink(own);
            if let Some(&parent) = ref_nodes.last()
                && !self.is_ancestor(own, parent)
            {
                self.link(parent, own);
            }
        }

        // (2) The root set.
        let roots: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.nodes[n].parent.is_none()).collect();

        // (3) Prune dummies. Below the root a dummy is replaced by its children; children come
        // before their parents in reversed pre-order, so nested dummies are already flattened.
        let mut preorder = Vec::with_capacity(self.nodes.len());
        let mut stack = roots.clone();
        while let Some(n) = stack.pop() {
            preorder.push(n);
            stack.extend(self.nodes[n].children.iter().copied());
        }
        for &n in preorder.iter().rev() {
            let mut kids = Vec::new();
            for c in std::mem::take(&mut self.nodes[n].children) {
                if self.nodes[c].msg.is_some() {
                    kids.push(c);
                } else {
                    kids.append(&mut self.nodes[c].children);
                }
            }
            for &c in &kids {
                self.nodes[c].parent = Some(n);
            }
            self.nodes[n].children = kids;
        }
        // At the root a dummy goes if empty, and gives way to its child only if it has just one.
        for r in roots {
            if self.nodes[r].msg.is_some() || self.nodes[r].children.len() > 1 {
                self.roots.push(r);
            } else if let Some(&only) = self.nodes[r].children.first() {
                self.nodes[r].children.clear();
                self.nodes[only].parent = None;
                self.roots.push(only);
            }
        }

        // (4) Sort the root level (a dummy by its first child).
        for r in self.roots.clone() {
            if self.nodes[r].msg.is_none() {
                self.sort_children(r);
            }
        }
        self.sort_roots();

        // (5) Gather root threads with the same base subject.
        self.merge_subjects();

        // (6) Sort every set of siblings.
        for n in 0..self.nodes.len() {
            self.sort_children(n);
        }
        self.sort_roots();
    }

    fn is_reply(&self, n: usize) -> bool {
        self.nodes[n].msg.is_some_and(|m| self.msgs[m].reply)
    }

    /// RFC 5256 REFERENCES step (5).
    fn merge_subjects(&mut self) {
        let msgs = self.msgs;
        let roots = self.roots.clone();
        // (5B) One thread per subject: a dummy if there is one, else preferably not a reply.
        let mut table: HashMap<&str, usize> = HashMap::new();
        for &r in &roots {
            let Some(s) = thread_subject(&self.nodes, msgs, r) else { continue };
            match table.get(s) {
                Some(&t)
                    if self.nodes[t].msg.is_some()
                        && (self.nodes[r].msg.is_none() || (self.is_reply(t) && !self.is_reply(r))) =>
                {
                    table.insert(s, r);
                }
                Some(_) => {}
                None => {
                    table.insert(s, r);
                }
            }
        }

        // (5C) Merge each other thread into the one in the table.
        let mut gone = vec![false; self.nodes.len()];
        let mut added = Vec::new();
        for &r in &roots {
            if gone[r] || self.nodes[r].parent.is_some() {
                continue;
            }
            let Some(s) = thread_subject(&self.nodes, msgs, r) else { continue };
            let Some(&t) = table.get(s) else { continue };
            if t == r {
                continue;
            }
            let (t_dummy, r_dummy) = (self.nodes[t].msg.is_none(), self.nodes[r].msg.is_none());
            if t_dummy && r_dummy {
                let kids = std::mem::take(&mut self.nodes[r].children);
                for &k in &kids {
                    self.nodes[k].parent = Some(t);
                }
                self.nodes[t].children.extend(kids);
                gone[r] = true;
            } else if t_dummy || (self.is_reply(r) && !self.is_reply(t)) {
                self.link(t, r);
            } else {
                let d = self.add(None);
                self.link(d, t);
                self.link(d, r);
                table.insert(s, d);
                added.push(d);
            }
        }
        self.roots = roots.into_iter().filter(|&r| !gone[r] && self.nodes[r].parent.is_none()).chain(added).collect();
    }
}

/// Base subject of a root thread: its message's, or a dummy's first child's; None if empty.
/// It borrows from the messages, not from the forest that step (5) changes.
fn thread_subject<'m>(nodes: &[Node], msgs: &'m [Msg], r: usize) -> Option<&'m str> {
    let m = nodes[r].msg.or_else(|| nodes[r].children.first().and_then(|&c| nodes[c].msg))?;
    let s = msgs[m].subject.as_str();
    if s.is_empty() { None } else { Some(s) }
}

/// The msg-ids ("<...>") in a header value, without the brackets and any folding whitespace.
fn msg_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let inner = &after[..close];
        // A second '<' before the '>' means the first one was stray.
        if let Some(p) = inner.rfind('<') {
            rest = &after[p..];
            continue;
        }
        let id: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
        if !id.is_empty() {
            out.push(id);
        }
        rest = &after[close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sort::mbox;

    /// Threads the given messages as a mailbox numbered 1..n.
    fn run(algorithm: Algorithm, msgs: &[&mbox::Msg]) -> String {
        let items: Vec<ThreadItem<'_>> = msgs
            .iter()
            .zip(1..)
            .map(|(m, seq)| ThreadItem { id: seq, seq, internal_date: m.internal_date, envelope: &m.envelope })
            .collect();
        thread(algorithm, &items).nested()
    }

    /// The mailbox after appending the mbox's messages at these (0-based) positions, in order.
    fn refs(all: &[mbox::Msg], pick: &[usize]) -> String {
        let msgs: Vec<&mbox::Msg> = pick.iter().map(|&i| &all[i]).collect();
        run(Algorithm::References, &msgs)
    }

    #[test]
    fn imaptest_thread() {
        let all = mbox::parse(&mbox::load_mbox!("thread"));
        assert_eq!(refs(&all, &[0, 1, 2]), "(3 2)(1)");
        // store 1 +flags \deleted; expunge
        assert_eq!(refs(&all, &[1, 2]), "(2 1)");
    }

    #[test]
    fn imaptest_thread2_to_4_and_6() {
        assert_eq!(refs(&mbox::parse(&mbox::load_mbox!("thread2")), &[0, 1]), "(1)(2)");
        assert_eq!(refs(&mbox::parse(&mbox::load_mbox!("thread3")), &[0, 1]), "(1 2)");
        assert_eq!(refs(&mbox::parse(&mbox::load_mbox!("thread4")), &[0, 1]), "(1 2)");
        assert_eq!(refs(&mbox::parse(&mbox::load_mbox!("thread6")), &[0, 1]), "((1)(2))");
    }

    #[test]
    fn imaptest_thread5() {
        let all = mbox::parse(&mbox::load_mbox!("thread5"));
        // Four appends.
        assert_eq!(refs(&all, &[0, 1, 2, 3]), "(1 (2 4)(3))");
        // store 1,2 +flags \deleted; expunge
        assert_eq!(refs(&all, &[2, 3]), "(1)(2)");
        // append
        assert_eq!(refs(&all, &[2, 3, 4]), "(1)((2)(3))");
    }

    #[test]
    fn imaptest_thread7() {
        let all = mbox::parse(&mbox::load_mbox!("thread7"));
        assert_eq!(refs(&all, &[0, 1, 2, 3]), "(1 (2 3)(4))");
        // store 2 +flags \deleted; expunge
        assert_eq!(refs(&all, &[0, 2, 3]), "(1 3 2)");
    }

    #[test]
    fn imaptest_thread8() {
        let all = mbox::parse(&mbox::load_mbox!("thread8"));
        assert_eq!(refs(&all, &[0, 1]), "(1 2)");
        // store 2 +flags \deleted; expunge
        assert_eq!(refs(&all, &[0]), "(1)");
        // append
        assert_eq!(refs(&all, &[0, 2]), "(1 2)");
    }

    #[test]
    fn imaptest_thread_orderedsubject() {
        let all = mbox::parse(&mbox::load_mbox!("thread-orderedsubject"));
        let msgs: Vec<&mbox::Msg> = all.iter().collect();
        assert_eq!(run(Algorithm::OrderedSubject, &msgs), "(1)(2 (7)(12)(13))(3 (5)(11))(4)(6)(8)(9 10)(14)(15)");
        let all = mbox::parse(&mbox::load_mbox!("thread-orderedsubject2"));
        let msgs: Vec<&mbox::Msg> = all.iter().collect();
        assert_eq!(run(Algorithm::OrderedSubject, &msgs), "(4 (2)(8)(6))(3 (1)(7)(5))");
    }

    fn env(id: Option<&str>, refs: Option<&str>, irt: Option<&str>, subject: &str, date: &str) -> EnvelopeFields {
        EnvelopeFields {
            message_id: id.map(str::to_string),
            references: refs.map(str::to_string),
            in_reply_to: irt.map(str::to_string),
            subject: Some(subject.to_string()),
            date: Some(date.to_string()),
            ..Default::default()
        }
    }

    fn items(envs: &[EnvelopeFields]) -> Vec<ThreadItem<'_>> {
        envs.iter().zip(1..).map(|(e, seq)| ThreadItem { id: seq, seq, internal_date: 0, envelope: e }).collect()
    }

    #[test]
    fn empty_mailbox() {
        assert_eq!(thread(Algorithm::References, &[]).nested(), "");
        assert_eq!(thread(Algorithm::OrderedSubject, &[]).nested(), "");
    }

    #[test]
    fn references_subject_merging_and_in_reply_to() {
        let d = |n: u32| format!("Mon, 1 Jan 2024 00:00:{n:02} +0000");
        let envs = [
            // 1: a reply whose parent is missing, in a thread of its own.
            env(Some("<r1@x>"), Some("<gone@x>"), None, "Re: lunch", &d(5)),
            // 2: the original, later: 1 becomes its child by subject.
            env(Some("<o@x>"), None, None, "lunch", &d(6)),
            // 3: In-Reply-To with junk around the id, used as References is absent.
            env(Some("<r3@x>"), None, Some("your message <o@x> of Monday"), "Re: lunch", &d(7)),
            // 4 and 5: two originals with the same subject get a dummy parent.
            env(Some("<p@x>"), None, None, "plans", &d(1)),
            env(Some("<q@x>"), None, None, "[fwd: plans]", &d(2)),
            env(Some("<s@x>"), None, None, "plans", &d(3)),
        ];
        // 5 is a forward, so it goes under 4 rather than beside it; 6 joins 4 under a dummy.
        assert_eq!(thread(Algorithm::References, &items(&envs)).nested(), "((4 5)(6))(2 (1)(3))");
    }

    #[test]
    fn references_ignore_loops_and_self_references() {
        let envs = [
            env(Some("<a@x>"), Some("<b@x>"), None, "one", "1 Jan 2024 00:00:01 +0000"),
            env(Some("<b@x>"), Some("<a@x>"), None, "two", "1 Jan 2024 00:00:02 +0000"),
            env(Some("<c@x>"), Some("<c@x>"), None, "three", "1 Jan 2024 00:00:03 +0000"),
        ];
        // 2 cannot go under 1 (1 is already its child); 3 cannot be its own parent.
        assert_eq!(thread(Algorithm::References, &items(&envs)).nested(), "(2 1)(3)");
    }

    #[test]
    fn ids_are_printed_as_given() {
        let envs = [env(Some("<a@x>"), None, None, "s", "x"), env(Some("<b@x>"), Some("<a@x>"), None, "s", "x")];
        let mut its = items(&envs);
        its[0].id = 100;
        its[1].id = 200;
        assert_eq!(thread(Algorithm::References, &its).nested(), "(100 200)");
        assert_eq!(thread(Algorithm::OrderedSubject, &its).nested(), "(100 200)");
    }

    #[test]
    fn long_reply_chain_does_not_recurse() {
        let n = 50_000u32;
        let envs: Vec<EnvelopeFields> = (0..n)
            .map(|i| {
                let parent = (i > 0).then(|| format!("<{}@x>", i - 1));
                env(Some(&format!("<{i}@x>")), None, parent.as_deref(), "x", "")
            })
            .collect();
        let out = thread(Algorithm::References, &items(&envs)).nested();
        let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        assert_eq!(out, format!("({})", want.join(" ")));
    }
}
