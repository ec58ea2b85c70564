// Package remoteconfig applies configurations the cloud pushes to a
// gateway: signed envelopes (package signed) holding a whole ferry
// configuration, offered by the downlink as they arrive on the
// remote_config topic.
//
// A Manager is long-lived: the gateway starts it once and a reload does not
// restart it. Offer, called by the downlink's message handler, is bounded
// and quick: it checks the size, the signature (a key of the local file's
// remote_config.trusted_keys), the gateway and the version, stores the
// envelope durably as the candidate, wakes Run and returns; once it has
// returned nil the message may be acknowledged to the cloud, because a
// crash from then on finds the candidate on disk and applies it at the
// next start. Run does the slow part: it loads the document as the
// configuration replacing the local file's (config.LoadRemote), checks it
// as `ferry check` does and as a reload would (restart-only keys refused),
// applies it (Applier, the gateway's Apply), reports the outcome on the
// status topic, and watches the uplink: if it has not connected under the
// new configuration within remote_config.rollback_after, the last
// configuration it connected with is applied again (status rolled_back).
//
// Versions: the local file is version 0, and an envelope is applied only
// if its version is above every version this gateway has ever tried,
// applied, refused or rolled back. A version tried before and offered
// again (a retained message comes back on every reconnect) is refused
// without a new status when the last status is about it; the version in
// force offered again is a silent no-op.
//
// State lives in Dir(cfg) (<data_dir>/remote-config): the applied envelope
// (applied.conf), the last one the uplink connected with (good.conf), the
// candidate (candidate.conf) and state.json (versions, whether the applied
// one awaits the uplink, the last status). Every file is replaced
// atomically (temporary file, fsync, rename, directory fsync). At start
// the gateway runs AtStart, and on a reload Effective: the stored applied
// configuration, verified again against the local file's trusted keys and
// checked again, else the local file. A configuration the gateway started
// with several times (maxPendingBoots) without the uplink connecting is
// rolled back by AtStart itself, so one that makes the gateway crash
// cannot hold it in a restart loop.
//
// Concurrency: Offer and Version are safe for concurrent use with each
// other and with Run; one Run per Manager. Offers are handled in version
// order only in the sense that a lower version offered after a higher one
// is refused; an offer that arrives while Run applies another replaces
// the candidate and is applied next. Status payloads go to the StatusSink
// in the order the outcomes happen, each replacing the last.
package remoteconfig
