package broker

import (
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/ferrygw/ferry/internal/keyring"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sessionStore is mochi's bolt storage hook minus two writes that would
// sit on the ingest path: the broker's own PUBACK to an inbound QoS 1
// publish is tracked as "in flight" for microseconds (stored, then deleted),
// and the $SYS info tick would write every interval on an idle board.
//
// With keys it seals every message payload it writes: retained messages
// (associated data "retained/" and the topic), messages in flight to or
// queued for a client ("inflight/", the client ID and the topic) and
// clients' will messages ("will/", the client ID and the will topic), each
// length-prefixed so no two places share associated data. A sealed payload
// copied to another record, topic or client therefore fails to open. Topic
// names, client IDs, user names and properties stay in the clear: they are
// what the store is keyed and searched by.
//
// Reading the store back, a sealed payload is opened; one that does not
// open (wrong or removed key, corruption, or no keys configured any more)
// is dropped with a warning, and a will that does not open is removed
// from its client. A payload stored in the clear before keys were set
// passes through unchanged (it is sealed when next written). A clear
// payload is told apart by its first byte (keyring.IsSealed): a clear
// binary payload of 45 bytes or more that happens to start with 0xFE is
// taken for sealed and dropped, once, when keys are first set.
type sessionStore struct {
	*bolt.Hook
	log  *slog.Logger
	keys *keyring.Ring // nil: payloads stored in the clear

	// budget, if set, bounds what is loaded at start as it bounds what
	// clients can make the broker hold while it runs, so a store written
	// under larger limits (or by an older ferry) cannot make a restart
	// need more memory than the budget; see loadBudget.
	budget *budget
	kept   map[string]bool // persistent sessions loaded; nil: all
}

// Provides leaves out StoredSysInfo too: mochi restores $SYS info last
// and would set its subscription count, which the subscription budget
// reads, back to the stored (here: zero) value after loading them.
func (s *sessionStore) Provides(b byte) bool {
	return b != mqtt.OnSysInfoTick && b != mqtt.StoredSysInfo && s.Hook.Provides(b)
}

// aad is the associated data sealing a payload to its place: kind, then
// two length-prefixed strings.
func aad(kind, a, b string) []byte {
	out := make([]byte, 0, len(kind)+len(a)+len(b)+12)
	out = append(out, kind...)
	out = append(out, '/')
	out = strconv.AppendInt(out, int64(len(a)), 10)
	out = append(out, ':')
	out = append(out, a...)
	out = strconv.AppendInt(out, int64(len(b)), 10)
	out = append(out, ':')
	return append(out, b...)
}

func retainedAAD(topic string) []byte         { return aad("retained", topic, "") }
func inflightAAD(client, topic string) []byte { return aad("inflight", client, topic) }
func willAAD(client, topic string) []byte     { return aad("will", client, topic) }

// seal returns payload sealed for ad; empty payloads (retained deletions,
// acknowledgements) and payloads without keys are returned as they are.
func (s *sessionStore) seal(payload, ad []byte) []byte {
	if s.keys == nil || len(payload) == 0 {
		return payload
	}
	return s.keys.Seal(nil, payload, ad)
}

// open returns the clear payload; ok is false when it is sealed and does
// not open.
func (s *sessionStore) open(payload, ad []byte) (clear []byte, ok bool, err error) {
	if !keyring.IsSealed(payload) {
		return payload, true, nil
	}
	if s.keys == nil {
		return nil, false, errNoKeys
	}
	out, err := s.keys.Open(nil, payload, ad)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

type sealError string

func (e sealError) Error() string { return string(e) }

const errNoKeys = sealError("payload is sealed but no keys are configured")

// OnRetainMessage stores the retained message with its payload sealed. pk
// is the hook's own copy; the new payload is a new slice, so the caller's
// packet (and the retained message mochi serves) is untouched.
func (s *sessionStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	pk.Payload = s.seal(pk.Payload, retainedAAD(pk.TopicName))
	s.Hook.OnRetainMessage(cl, pk, r)
}

func (s *sessionStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Puback { // our ack to an inbound QoS 1
		return
	}
	pk.Payload = s.seal(pk.Payload, inflightAAD(cl.ID, pk.TopicName))
	s.Hook.OnQosPublish(cl, pk, sent, resends)
}

// OnQosComplete is given the packet that was in flight (mochi patch 12),
// so a PUBACK here is always our ack to an inbound QoS 1, never stored.
func (s *sessionStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Puback {
		return
	}
	s.Hook.OnQosComplete(cl, pk)
}

// OnSessionEstablished and OnWillSent store the client record, which holds
// its will message.
func (s *sessionStore) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	s.Hook.OnSessionEstablished(s.sealedWill(cl), pk)
}

func (s *sessionStore) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	s.Hook.OnWillSent(s.sealedWill(cl), pk)
}

// sealedWill returns cl itself when there is no will payload to seal, and
// otherwise a stand-in holding just what the bolt hook stores of a client
// (ID, remote and listener, properties) with the will payload sealed: the
// live client must not be changed, and it holds locks that must not be
// copied.
func (s *sessionStore) sealedWill(cl *mqtt.Client) *mqtt.Client {
	if s.keys == nil || len(cl.Properties.Will.Payload) == 0 {
		return cl
	}
	c := &mqtt.Client{
		ID:         cl.ID,
		Net:        mqtt.ClientConnection{Remote: cl.Net.Remote, Listener: cl.Net.Listener},
		Properties: cl.Properties,
	}
	c.Properties.Will.Payload = s.seal(cl.Properties.Will.Payload, willAAD(cl.ID, cl.Properties.Will.TopicName))
	return c
}

// StoredClients opens the clients' will payloads; a will that does not
// open is removed (the session itself is kept).
func (s *sessionStore) StoredClients() ([]storage.Client, error) {
	cls, err := s.Hook.StoredClients()
	var dropped int
	var first error
	for i := range cls {
		w := &cls[i].Will
		p, ok, oerr := s.open(w.Payload, willAAD(cls[i].ID, w.TopicName))
		if !ok {
			*w = storage.ClientWill{}
			dropped, first = dropped+1, firstErr(first, oerr)
			continue
		}
		w.Payload = p
	}
	s.warnDropped("wills", dropped, first)
	return s.budgetClients(cls), err
}

// StoredRetainedMessages opens the retained messages' payloads.
func (s *sessionStore) StoredRetainedMessages() ([]storage.Message, error) {
	msgs, err := s.Hook.StoredRetainedMessages()
	kept := msgs[:0]
	var dropped int
	var first error
	for _, m := range msgs {
		p, ok, oerr := s.open(m.Payload, retainedAAD(m.TopicName))
		if !ok {
			dropped, first = dropped+1, firstErr(first, oerr)
			continue
		}
		m.Payload = p
		kept = append(kept, m)
	}
	s.warnDropped("retained messages", dropped, first)
	return s.budgetRetained(kept), err
}

// StoredInflightMessages opens the in-flight messages' payloads and
// restores their packet IDs: mochi's bolt hook (v2.7.9) keys them by client
// and packet ID but does not store the ID in the record, so without this
// every restored message would be resent with packet ID 0, which clients
// reject.
func (s *sessionStore) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := s.Hook.StoredInflightMessages()
	kept := msgs[:0]
	var dropped int
	var first error
	for _, m := range msgs {
		p, ok, oerr := s.open(m.Payload, inflightAAD(m.Client, m.TopicName))
		if !ok {
			dropped, first = dropped+1, firstErr(first, oerr)
			continue
		}
		m.Payload = p
		if m.PacketID == 0 {
			if j := strings.LastIndexByte(m.ID, ':'); j >= 0 {
				if id, perr := strconv.ParseUint(m.ID[j+1:], 10, 16); perr == nil {
					m.PacketID = uint16(id)
				}
			}
		}
		kept = append(kept, m)
	}
	s.warnDropped("in-flight messages", dropped, first)
	return s.budgetInflight(kept), err
}

// StoredSubscriptions leaves out the subscriptions of sessions not loaded
// and those beyond the budget.
func (s *sessionStore) StoredSubscriptions() ([]storage.Subscription, error) {
	subs, err := s.Hook.StoredSubscriptions()
	return s.budgetSubscriptions(subs), err
}

// StoredSysInfo returns nothing: $SYS info is not persisted (see Provides),
// and asking the hook for it would log a "key not found" error at every
// start.
func (s *sessionStore) StoredSysInfo() (storage.SystemInfo, error) {
	return storage.SystemInfo{}, nil
}

// warnDropped logs, once per kind and start, the stored payloads that did
// not open.
func (s *sessionStore) warnDropped(what string, n int, first error) {
	if n > 0 && s.log != nil {
		s.log.Warn("session store: sealed payloads that do not open are dropped", "what", what, "dropped", n, "first_error", first)
	}
}

// firstErr returns the first non-nil error.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// budgetClients keeps at most MaxOfflineSessions persistent sessions (in
// the store's order, by client ID: the store does not say which is
// newest); sessions that expire on disconnect are mochi's to discard.
func (s *sessionStore) budgetClients(cls []storage.Client) []storage.Client {
	if s.budget == nil {
		return cls
	}
	s.kept = map[string]bool{}
	out := cls[:0]
	var dropped int
	for _, c := range cls {
		persistent := !(c.ProtocolVersion == 5 && c.Properties.SessionExpiryInterval == 0) && !(c.ProtocolVersion < 5 && c.Clean)
		if persistent {
			if len(s.kept) >= s.budget.MaxOfflineSessions {
				dropped++
				continue
			}
			s.kept[c.ID] = true
		}
		out = append(out, c)
	}
	s.loadDropped("sessions", dropped)
	return out
}

// budgetSubscriptions keeps the subscriptions of loaded sessions, within
// the per-client and total limits.
func (s *sessionStore) budgetSubscriptions(subs []storage.Subscription) []storage.Subscription {
	if s.budget == nil {
		return subs
	}
	per := map[string]int{}
	out := subs[:0]
	var dropped int
	for _, sub := range subs {
		if (s.kept != nil && !s.kept[sub.Client]) || per[sub.Client] >= s.budget.MaxClientSubscriptions || len(out) >= s.budget.MaxSubscriptions {
			dropped++
			continue
		}
		per[sub.Client]++
		out = append(out, sub)
	}
	s.loadDropped("subscriptions", dropped)
	return out
}

// budgetInflight puts the queued messages in each session's queue order
// and keeps those of loaded sessions within the per-session count and
// byte limits and the total byte limit: the oldest are kept, as while the
// broker runs a full queue refuses the newest.
func (s *sessionStore) budgetInflight(msgs []storage.Message) []storage.Message {
	// The store returns them by key (client, then packet ID as text).
	// Seq is their place in the queue (mochi patch 10); records written
	// before it have none, and the creation second is the best left.
	sort.SliceStable(msgs, func(i, j int) bool {
		a, b := &msgs[i], &msgs[j]
		if a.Client != b.Client {
			return a.Client < b.Client
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.Created < b.Created
	})
	if s.budget == nil {
		return msgs
	}
	per := map[string]int64{}
	count := map[string]int{}
	var total int64
	out := msgs[:0]
	var dropped int
	for _, m := range msgs {
		n := int64(len(m.Payload))
		if (s.kept != nil && !s.kept[m.Client]) || count[m.Client] >= s.budget.MaxSessionQueue ||
			per[m.Client]+n > s.budget.MaxSessionQueueBytes || total+n > s.budget.MaxQueueBytes {
			dropped++
			continue
		}
		count[m.Client]++
		per[m.Client] += n
		total += n
		out = append(out, m)
	}
	s.loadDropped("queued messages", dropped)
	return out
}

// budgetRetained keeps the retained messages within the budget and
// records them in its accounting.
func (s *sessionStore) budgetRetained(msgs []storage.Message) []storage.Message {
	if s.budget == nil {
		return msgs
	}
	out := msgs[:0]
	var dropped int
	for _, m := range msgs {
		if len(m.Payload) == 0 {
			continue
		}
		if !s.budget.retainAllowed(m.TopicName, m.Payload) {
			dropped++
			continue
		}
		s.budget.retainedSet(m.TopicName, m.Payload)
		out = append(out, m)
	}
	s.loadDropped("retained messages", dropped)
	return out
}

// loadDropped counts and reports, once per kind and start, what was left
// out of the store to fit the budget.
func (s *sessionStore) loadDropped(what string, n int) {
	if n == 0 {
		return
	}
	s.budget.storeDropped.Add(uint64(n))
	if s.log != nil {
		s.log.Warn("session store: left out at start to fit the memory budget", "what", what, "dropped", n)
	}
}
