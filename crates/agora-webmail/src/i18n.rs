//! The webmail's languages: English (the text in the code), German and French, chosen
//! in the settings or, by default, from the browser's Accept-Language. Text is looked
//! up by its English form; a `{}` in it takes a value.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    De,
    Fr,
}

/// The languages offered, with their own names.
pub const OFFERED: &[(&str, &str)] = &[("en", "English"), ("de", "Deutsch"), ("fr", "Français")];

impl Lang {
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            "fr" => Some(Lang::Fr),
            _ => None,
        }
    }

    /// The best of ours for an Accept-Language field (RFC 9110 §12.5.4), English failing all.
    pub fn negotiate(accept: Option<&str>) -> Lang {
        let Some(accept) = accept else { return Lang::En };
        let mut best: Option<(f32, Lang)> = None;
        for item in accept.split(',').take(32) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("");
            let q = parts.find_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.parse::<f32>().ok())).unwrap_or(1.0);
            if let Some(l) = Lang::from_tag(tag)
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, l));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Fr => "fr",
        }
    }

    /// `en` in this language (itself when it has no translation).
    pub fn t(self, en: &str) -> &str {
        let table = match self {
            Lang::En => return en,
            Lang::De => de(),
            Lang::Fr => fr(),
        };
        table.get(en).copied().unwrap_or(en)
    }

    /// `en` translated, its `{}` replaced by `value`.
    pub fn f(self, en: &str, value: impl std::fmt::Display) -> String {
        self.t(en).replacen("{}", &value.to_string(), 1)
    }

    /// A day and time as people of this language write them (UTC).
    pub fn when(self, secs: i64) -> String {
        let (y, mo, d, h, mi, _) = agora_store::time::split(secs);
        match self {
            Lang::En => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}"),
            Lang::De => format!("{d:02}.{mo:02}.{y:04} {h:02}:{mi:02}"),
            Lang::Fr => format!("{d:02}/{mo:02}/{y:04} {h:02}:{mi:02}"),
        }
    }
}

fn de() -> &'static HashMap<&'static str, &'static str> {
    static T: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    T.get_or_init(|| DE.iter().copied().collect())
}

fn fr() -> &'static HashMap<&'static str, &'static str> {
    static T: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    T.get_or_init(|| FR.iter().copied().collect())
}

const DE: &[(&str, &str)] = &[
    ("Mail", "Post"),
    ("Write", "Schreiben"),
    ("Settings", "Einstellungen"),
    ("Sessions", "Sitzungen"),
    ("Admin", "Verwaltung"),
    ("Sign out", "Abmelden"),
    ("Sign in", "Anmelden"),
    ("Sign in to {}", "Bei {} anmelden"),
    ("Email address", "E-Mail-Adresse"),
    ("Password", "Passwort"),
    ("Authenticator code (if you use one)", "Code der Authenticator-App (falls verwendet)"),
    ("Wrong address or password.", "Adresse oder Passwort falsch."),
    ("Folders", "Ordner"),
    ("Manage folders", "Ordner verwalten"),
    ("Messages", "Nachrichten"),
    ("1 message", "1 Nachricht"),
    ("{} messages", "{} Nachrichten"),
    ("1 found", "1 gefunden"),
    ("{} found", "{} gefunden"),
    ("No messages.", "Keine Nachrichten."),
    ("Search", "Suchen"),
    ("Search this folder", "Diesen Ordner durchsuchen"),
    ("Where", "Wo"),
    ("Anywhere", "Überall"),
    ("From", "Von"),
    ("To or Cc", "An oder Cc"),
    ("Subject", "Betreff"),
    ("Body", "Text"),
    ("before", "vor"),
    ("Has attachments", "Mit Anhängen"),
    ("Show threads", "Als Unterhaltungen"),
    ("Show as a list", "Als Liste"),
    ("Date", "Datum"),
    ("Size", "Größe"),
    ("Select", "Auswählen"),
    ("Newer", "Neuer"),
    ("Older", "Älter"),
    ("Mark read", "Als gelesen markieren"),
    ("Mark unread", "Als ungelesen markieren"),
    ("Flag", "Markieren"),
    ("Unflag", "Markierung entfernen"),
    ("Delete", "Löschen"),
    ("Junk", "Spam"),
    ("Not junk", "Kein Spam"),
    ("Move to", "Verschieben nach"),
    ("Move", "Verschieben"),
    ("Empty {}", "{} leeren"),
    ("Back to {}", "Zurück zu {}"),
    ("Reply", "Antworten"),
    ("Reply all", "Allen antworten"),
    ("Forward", "Weiterleiten"),
    ("Forward as attachment", "Als Anhang weiterleiten"),
    ("View source", "Quelltext"),
    ("Continue writing", "Weiterschreiben"),
    ("(no subject)", "(kein Betreff)"),
    ("Attachments", "Anhänge"),
    ("Attached message", "Angehängte Nachricht"),
    ("Save this message", "Diese Nachricht speichern"),
    ("Show as text", "Als Text anzeigen"),
    ("Show as HTML", "Als HTML anzeigen"),
    ("Show remote images", "Externe Bilder anzeigen"),
    ("Always show images from {}", "Bilder von {} immer anzeigen"),
    ("✓ Verified sender: {}", "✓ Bestätigter Absender: {}"),
    (
        "⚠ This message failed the checks of its sender's domain{}: it may not be from who it says.",
        "⚠ Diese Nachricht hat die Prüfungen der Absenderdomain nicht bestanden{}: Sie stammt vielleicht nicht von dem, der sie zu senden vorgibt.",
    ),
    ("New message", "Neue Nachricht"),
    ("To", "An"),
    ("Message", "Nachricht"),
    ("Attach files (up to {} in total)", "Dateien anhängen (insgesamt bis {})"),
    ("Send", "Senden"),
    ("Save draft", "Entwurf speichern"),
    ("Draft saved at {}.", "Entwurf um {} gespeichert."),
    ("Sent", "Gesendet"),
    ("Your message is on its way.", "Ihre Nachricht ist unterwegs."),
    ("Back to the inbox", "Zurück zum Posteingang"),
    ("Keyboard shortcuts", "Tastenkürzel"),
    ("next / previous message", "nächste / vorige Nachricht"),
    ("open", "öffnen"),
    ("select", "auswählen"),
    ("reply / reply all / forward", "antworten / allen antworten / weiterleiten"),
    ("write", "schreiben"),
    ("delete", "löschen"),
    ("junk", "Spam"),
    ("search", "suchen"),
    ("back to the list", "zurück zur Liste"),
    ("this help", "diese Hilfe"),
    ("You", "Sie"),
    ("Display name", "Anzeigename"),
    ("Signature (added to new messages)", "Signatur (unter neuen Nachrichten)"),
    ("Save", "Speichern"),
    ("Saved.", "Gespeichert."),
    ("Language", "Sprache"),
    ("As the browser asks", "Wie der Browser es wünscht"),
    ("Current password", "Aktuelles Passwort"),
    ("New password (at least {} characters)", "Neues Passwort (mindestens {} Zeichen)"),
    ("New password again", "Neues Passwort wiederholen"),
    ("Change password", "Passwort ändern"),
    ("Vacation reply", "Abwesenheitsnotiz"),
    ("Answer mail automatically", "Automatisch antworten"),
    ("Forwarding", "Weiterleitung"),
    ("Keep a copy here", "Eine Kopie hier behalten"),
    ("Remote images always shown from", "Externe Bilder immer anzeigen von"),
    ("Remove", "Entfernen"),
    ("Signed-in sessions", "Angemeldete Sitzungen"),
    ("Sign out everywhere", "Überall abmelden"),
    ("Browser", "Browser"),
    ("Signed in", "Angemeldet"),
    ("Last seen", "Zuletzt aktiv"),
    ("(this one)", "(diese)"),
    ("New folder", "Neuer Ordner"),
    ("Create", "Anlegen"),
    ("Rename", "Umbenennen"),
    ("Empty", "Leeren"),
    ("Folder", "Ordner"),
    ("Folder created.", "Ordner angelegt."),
    ("Folder renamed.", "Ordner umbenannt."),
    ("Folder deleted.", "Ordner gelöscht."),
    ("Emptied.", "Geleert."),
    ("Subject (empty: \"Auto: \" and theirs)", "Betreff (leer: „Auto: “ und ihrer)"),
    ("Reply text", "Antworttext"),
    ("From (optional)", "Ab (optional)"),
    ("Until (optional, not included)", "Bis (optional, ausschließlich)"),
    ("Answer each sender once in this many days", "Jedem Absender höchstens einmal in so vielen Tagen antworten"),
    (
        "Lists, bulk mail and automatic messages are never answered.",
        "Listen, Massenpost und automatische Nachrichten werden nie beantwortet.",
    ),
    ("Forward all mail to (empty: off)", "Alle Post weiterleiten an (leer: aus)"),
    (
        "None: remote images are shown only when you ask, message by message.",
        "Keine: Externe Bilder werden nur auf Wunsch gezeigt, Nachricht für Nachricht.",
    ),
    ("Not saved; try again.", "Nicht gespeichert; bitte erneut versuchen."),
    ("Removed.", "Entfernt."),
    ("The new passwords differ.", "Die neuen Passwörter stimmen nicht überein."),
    ("The new password is too short.", "Das neue Passwort ist zu kurz."),
    ("The current password is wrong.", "Das aktuelle Passwort ist falsch."),
    (
        "Password changed; your other sessions were signed out.",
        "Passwort geändert; Ihre anderen Sitzungen wurden abgemeldet.",
    ),
];

const FR: &[(&str, &str)] = &[
    ("Mail", "Courrier"),
    ("Write", "Écrire"),
    ("Settings", "Réglages"),
    ("Sessions", "Sessions"),
    ("Admin", "Administration"),
    ("Sign out", "Se déconnecter"),
    ("Sign in", "Se connecter"),
    ("Sign in to {}", "Connexion à {}"),
    ("Email address", "Adresse électronique"),
    ("Password", "Mot de passe"),
    ("Authenticator code (if you use one)", "Code d'authentification (si vous en utilisez un)"),
    ("Wrong address or password.", "Adresse ou mot de passe incorrect."),
    ("Folders", "Dossiers"),
    ("Manage folders", "Gérer les dossiers"),
    ("Messages", "Messages"),
    ("1 message", "1 message"),
    ("{} messages", "{} messages"),
    ("1 found", "1 trouvé"),
    ("{} found", "{} trouvés"),
    ("No messages.", "Aucun message."),
    ("Search", "Rechercher"),
    ("Search this folder", "Rechercher dans ce dossier"),
    ("Where", "Où"),
    ("Anywhere", "Partout"),
    ("From", "De"),
    ("To or Cc", "À ou Cc"),
    ("Subject", "Objet"),
    ("Body", "Texte"),
    ("before", "avant le"),
    ("Has attachments", "Avec pièces jointes"),
    ("Show threads", "Par conversation"),
    ("Show as a list", "En liste"),
    ("Date", "Date"),
    ("Size", "Taille"),
    ("Select", "Choisir"),
    ("Newer", "Plus récent"),
    ("Older", "Plus ancien"),
    ("Mark read", "Marquer comme lu"),
    ("Mark unread", "Marquer comme non lu"),
    ("Flag", "Signaler"),
    ("Unflag", "Ne plus signaler"),
    ("Delete", "Supprimer"),
    ("Junk", "Indésirable"),
    ("Not junk", "Désirable"),
    ("Move to", "Déplacer vers"),
    ("Move", "Déplacer"),
    ("Empty {}", "Vider {}"),
    ("Back to {}", "Retour à {}"),
    ("Reply", "Répondre"),
    ("Reply all", "Répondre à tous"),
    ("Forward", "Transférer"),
    ("Forward as attachment", "Transférer en pièce jointe"),
    ("View source", "Source"),
    ("Continue writing", "Reprendre"),
    ("(no subject)", "(sans objet)"),
    ("Attachments", "Pièces jointes"),
    ("Attached message", "Message joint"),
    ("Save this message", "Enregistrer ce message"),
    ("Show as text", "Afficher en texte"),
    ("Show as HTML", "Afficher en HTML"),
    ("Show remote images", "Afficher les images distantes"),
    ("Always show images from {}", "Toujours afficher les images de {}"),
    ("✓ Verified sender: {}", "✓ Expéditeur vérifié : {}"),
    (
        "⚠ This message failed the checks of its sender's domain{}: it may not be from who it says.",
        "⚠ Ce message a échoué aux vérifications du domaine de l'expéditeur{} : il ne vient peut-être pas de qui il prétend.",
    ),
    ("New message", "Nouveau message"),
    ("To", "À"),
    ("Message", "Message"),
    ("Attach files (up to {} in total)", "Joindre des fichiers (jusqu'à {} en tout)"),
    ("Send", "Envoyer"),
    ("Save draft", "Enregistrer le brouillon"),
    ("Draft saved at {}.", "Brouillon enregistré à {}."),
    ("Sent", "Envoyé"),
    ("Your message is on its way.", "Votre message est parti."),
    ("Back to the inbox", "Retour à la boîte de réception"),
    ("Keyboard shortcuts", "Raccourcis clavier"),
    ("next / previous message", "message suivant / précédent"),
    ("open", "ouvrir"),
    ("select", "choisir"),
    ("reply / reply all / forward", "répondre / répondre à tous / transférer"),
    ("write", "écrire"),
    ("delete", "supprimer"),
    ("junk", "indésirable"),
    ("search", "rechercher"),
    ("back to the list", "retour à la liste"),
    ("this help", "cette aide"),
    ("You", "Vous"),
    ("Display name", "Nom affiché"),
    ("Signature (added to new messages)", "Signature (ajoutée aux nouveaux messages)"),
    ("Save", "Enregistrer"),
    ("Saved.", "Enregistré."),
    ("Language", "Langue"),
    ("As the browser asks", "Selon le navigateur"),
    ("Current password", "Mot de passe actuel"),
    ("New password (at least {} characters)", "Nouveau mot de passe (au moins {} caractères)"),
    ("New password again", "Nouveau mot de passe, à nouveau"),
    ("Change password", "Changer le mot de passe"),
    ("Vacation reply", "Réponse d'absence"),
    ("Answer mail automatically", "Répondre automatiquement"),
    ("Forwarding", "Transfert"),
    ("Keep a copy here", "Garder une copie ici"),
    ("Remote images always shown from", "Images distantes toujours affichées pour"),
    ("Remove", "Retirer"),
    ("Signed-in sessions", "Sessions ouvertes"),
    ("Sign out everywhere", "Se déconnecter partout"),
    ("Browser", "Navigateur"),
    ("Signed in", "Connecté le"),
    ("Last seen", "Dernière activité"),
    ("(this one)", "(celle-ci)"),
    ("New folder", "Nouveau dossier"),
    ("Create", "Créer"),
    ("Rename", "Renommer"),
    ("Empty", "Vider"),
    ("Folder", "Dossier"),
    ("Folder created.", "Dossier créé."),
    ("Folder renamed.", "Dossier renommé."),
    ("Folder deleted.", "Dossier supprimé."),
    ("Emptied.", "Vidé."),
    ("Subject (empty: \"Auto: \" and theirs)", "Objet (vide : « Auto: » et le leur)"),
    ("Reply text", "Texte de la réponse"),
    ("From (optional)", "À partir du (facultatif)"),
    ("Until (optional, not included)", "Jusqu'au (facultatif, exclu)"),
    ("Answer each sender once in this many days", "Répondre une seule fois à chaque expéditeur sur ce nombre de jours"),
    (
        "Lists, bulk mail and automatic messages are never answered.",
        "Les listes, les envois en nombre et les messages automatiques ne reçoivent jamais de réponse.",
    ),
    ("Forward all mail to (empty: off)", "Transférer tout le courrier à (vide : désactivé)"),
    (
        "None: remote images are shown only when you ask, message by message.",
        "Aucun : les images distantes ne s'affichent que sur demande, message par message.",
    ),
    ("Not saved; try again.", "Non enregistré ; veuillez réessayer."),
    ("Removed.", "Retiré."),
    ("The new passwords differ.", "Les nouveaux mots de passe diffèrent."),
    ("The new password is too short.", "Le nouveau mot de passe est trop court."),
    ("The current password is wrong.", "Le mot de passe actuel est faux."),
    (
        "Password changed; your other sessions were signed out.",
        "Mot de passe changé ; vos autres sessions ont été fermées.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choosing_and_translating() {
        assert_eq!(Lang::negotiate(Some("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("ja, de;q=0.3, en;q=0.2")), Lang::De);
        assert_eq!(Lang::negotiate(Some("de;q=0, pt")), Lang::En);
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::De.t("Reply"), "Antworten");
        assert_eq!(Lang::De.f("{} messages", 3), "3 Nachrichten");
        assert_eq!(Lang::Fr.t("something untranslated"), "something untranslated");
        assert_eq!(Lang::De.when(0), "01.01.1970 00:00");
        // Every translation keeps its placeholders.
        for (en, tr) in DE.iter().chain(FR) {
            assert_eq!(en.matches("{}").count(), tr.matches("{}").count(), "{en} / {tr}");
        }
    }
}
