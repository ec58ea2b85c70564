package buffer

// Configure replaces the configuration of the named streams (and of
// streams first seen later) while the log runs: bounds, TTL and required
// consumers. Events already stored stay; a consumer that is new to a
// stream starts before its first stored event, so none of them is deleted
// before it has processed them. A consumer the stream no longer requires
// loses its position, and a late Ack of one that was required
// before (a removed pipeline still stopping) is ignored, so a stale
// position can neither delete events nor be counted against later
// deletions. Bounds apply from the next append; a stream not listed keeps
// its configuration.
func (l *Log) Configure(streams []StreamConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts.Streams = append([]StreamConfig(nil), streams...)
	l.cfgGen++
	for _, sc := range streams {
		s, ok := l.streams[sc.Name]
		if !ok {
			continue // streamLocked picks it up from l.opts.Streams
		}
		for _, c := range required(s.cfg) {
			if !requires(sc, c) {
				if l.retired == nil {
					l.retired = map[string]map[string]bool{}
				}
				if l.retired[sc.Name] == nil {
					l.retired[sc.Name] = map[string]bool{}
				}
				l.retired[sc.Name][c] = true
			}
		}
		for _, c := range required(sc) {
			delete(l.retired[sc.Name], c)
		}
		s.cfg = sc
		s.forgetUnrequired()
	}
}
