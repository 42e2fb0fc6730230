// Package authz decides which TLS clients may use the server, with the authorisation
// objects qemu-nbd's --tls-authz takes, and names a client the way QEMU names it.
//
// # Objects
//
// FromObject (or Build, with the form and logger explicit) turns one parsed --object into
// an Authorizer:
//
//   - authz-simple,id=ID,identity=DN: Simple, one identity allowed, compared byte for byte;
//   - authz-list,id=ID,policy=deny|allow,rules.N.match=M,rules.N.policy=allow|deny,
//     rules.N.format=exact|glob: List, the first matching rule decides, then the default
//     policy (deny unless given); a rule's format is exact unless given; glob is GLib's
//     g_pattern_match_simple (Match);
//   - authz-list-file,id=ID,filename=ABS[,refresh=on|off] (also spelled authz-listfile, the
//     QAPI name): ListFile, a List read from a JSON file, reloaded on inotify events while
//     refresh is on (the default) and on Reload (SIGHUP).
//
// The properties arrive nested ("rules.0.match=x" is {"rules": [{"match": "x"}]}) in one of
// two forms (Form): key=value, where every scalar is a string, or JSON, where scalars are
// JSON-typed. Missing, unexpected and badly typed properties are refused in QEMU 7.2's
// words, measured with qemu-nbd (docs/authz.md, "Object properties"), for instance
// "Parameter 'policy' does not accept value 'bogus'". The id is not checked here: the
// --object parser checks it for every object type.
//
// # Identities
//
// DN renders a client certificate's subject exactly as GnuTLS's gnutls_x509_crt_get_dn,
// which QEMU passes to the authorizer and prints in "TLS x509 authz check for DN is
// denied": certificate order, GnuTLS attribute names, RFC 4514 escaping as GnuTLS does it
// (docs/authz.md, "How a DN is rendered"). SubjectDN also returns GnuTLS's error for the
// subjects it cannot render (an empty CN, say), which qemu-nbd turns into "Cannot get
// client distinguished name: ASN1 parser: Value is not valid." before asking the
// authorizer; a TLS server should refuse such a client the same way. Check does the whole
// step (name, ask, refuse in qemu-nbd's words) for a verified client certificate.
//
// # Errors
//
// Refusals are of type Error and carry QEMU's text without a program prefix; the caller
// prints "qnbd: " (or whatever it prints) in front.
//
// # Differences from QEMU
//
// qemu-nbd 7.2 cannot create authz-list-file at all, so its behaviour here is ours
// (docs/authz.md, "authz-list-file"): the file name must be absolute whether or not
// refresh is on; the watch reloads when a new version of the file is complete (closed
// after writing, or renamed into the directory) rather than on every write; and a reload
// that fails keeps the previous rules and logs one line, where QEMU denies everyone until
// the file loads again (docs/authz.md, "When a reload fails").
//
// # Concurrency
//
// Allow may be called from any number of goroutines at once, also while a ListFile
// reloads: the rules in force are an immutable List swapped atomically, so a check sees
// either the old rules or the new ones, never a mix. Reloads are serialised.
package authz
