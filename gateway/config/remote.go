package config

import (
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"github.com/ferrygw/ferry/gateway/config/signed"
)

// RemoteConfig lets the cloud push a whole new configuration, signed with
// a key the gateway trusts (package signed, `ferry config sign`). It is
// read from the gateway's local file only: a pushed configuration gets
// the local file's section, and one that sets remote_config itself is
// refused (LoadRemote), so the cloud can never change which keys it must
// sign with.
type RemoteConfig struct {
	// Enabled subscribes to Topic and applies what arrives there.
	Enabled bool `yaml:"enabled"`
	// TrustedKeys are the Ed25519 public keys a pushed configuration may
	// be signed with: base64 of the 32 bytes (what `ferry config keygen`
	// prints) or a PEM PUBLIC KEY block.
	TrustedKeys []string `yaml:"trusted_keys"`
	// Topic is the cloud topic configurations arrive on ({gateway_id}
	// stands for the gateway's ID).
	Topic string `yaml:"topic"`
	// StatusTopic is the cloud topic the outcome is published to,
	// retained: applied, refused (every error with its line) or
	// rolled_back.
	StatusTopic string `yaml:"status_topic"`
	// RollbackAfter is how long the uplink has after a pushed
	// configuration is applied to connect under it; if it has not, the
	// last configuration it connected with is put back.
	RollbackAfter time.Duration `yaml:"rollback_after"`
}

// PublicKeys parses TrustedKeys (Validate has checked them).
func (r *RemoteConfig) PublicKeys() ([]ed25519.PublicKey, error) {
	keys := make([]ed25519.PublicKey, 0, len(r.TrustedKeys))
	for i, s := range r.TrustedKeys {
		k, err := signed.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("remote_config.trusted_keys[%d]: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// RemoteConfigTopics returns remote_config's topic and status_topic with
// {gateway_id} replaced.
func (c *Config) RemoteConfigTopics() (topic, status string) {
	r := strings.NewReplacer("{gateway_id}", c.GatewayID)
	return r.Replace(c.RemoteConfig.Topic), r.Replace(c.RemoteConfig.StatusTopic)
}

// validateRemote checks the remote_config section.
func (c *Config) validateRemote(k *checker) {
	r := &c.RemoteConfig
	for i, s := range r.TrustedKeys {
		if _, err := signed.ParsePublicKey(s); err != nil {
			k.add(fmt.Sprintf("remote_config.trusted_keys[%d]", i), "%v (ferry config keygen prints one)", err)
		}
	}
	if r.Enabled && len(r.TrustedKeys) == 0 {
		k.add("remote_config.trusted_keys", "must list at least one key when remote_config.enabled is true: a pushed configuration is applied only if one of them signed it")
	}
	if r.Enabled && (c.Uplink.Enabled == nil || !*c.Uplink.Enabled) {
		k.add("uplink.enabled", "must be true when remote_config.enabled is: configurations arrive over the cloud connection, and one is kept only if the uplink connects under it")
	}
	topic, status := c.RemoteConfigTopics()
	for _, t := range []struct{ key, tmpl, rendered string }{
		{"remote_config.topic", r.Topic, topic},
		{"remote_config.status_topic", r.StatusTopic, status},
	} {
		if err := checkTopicName(t.rendered); err != nil {
			k.add(t.key, "%v", err)
		} else if strings.ContainsAny(t.rendered, "{}") {
			k.add(t.key, "%q: the only placeholder is {gateway_id}", t.tmpl)
		}
	}
	if topic == status {
		k.add("remote_config.status_topic", "must differ from remote_config.topic (%q)", topic)
	}
	k.positive("remote_config.rollback_after", r.RollbackAfter)
}

// LoadRemote loads doc, the YAML of a configuration pushed from the cloud,
// as the configuration that replaces local's (the gateway's own file): as
// LoadBytes does, with the rules of a pushed configuration. Its
// remote_config section is local's, and setting one is an error (the cloud
// cannot change the keys it must sign with); gateway_id, when set, must be
// local's, and when not set is local's (a configuration for every gateway
// need not name one); the uplink must be enabled (without it the gateway
// could be reached no more). With local nil (`ferry config sign`, which has
// no gateway at hand) the section is left at its defaults and gateway_id
// is not compared. name is used in error messages; lines are doc's.
func LoadRemote(doc []byte, name string, local *Config) (*Config, error) {
	if len(doc) > MaxFileSize {
		return nil, tooLarge(name, int64(len(doc)))
	}
	c, errs, gaveUp := parse(doc, name)
	if gaveUp {
		return nil, errs
	}
	k := &checker{c: c}
	if c.explicit("remote_config") {
		k.add("remote_config", "a pushed configuration must not set remote_config: it is taken from the gateway's local file")
	}
	c.RemoteConfig = RemoteConfig{}
	if local != nil {
		c.RemoteConfig = local.RemoteConfig
		c.RemoteConfig.TrustedKeys = append([]string(nil), local.RemoteConfig.TrustedKeys...)
		if !c.explicit("gateway_id") {
			c.GatewayID = local.GatewayID
		} else if c.GatewayID != local.GatewayID {
			k.add("gateway_id", "is %q but this gateway is %q: a pushed configuration cannot rename the gateway", c.GatewayID, local.GatewayID)
		}
	}
	c.SetDefaults()
	if local == nil && (c.Uplink.Enabled == nil || !*c.Uplink.Enabled) {
		// With a local section enabled, validateRemote says so.
		k.add("uplink.enabled", "must be true in a pushed configuration: without the uplink the gateway could not be reached again")
	}
	if err := finish(c, append(errs, k.errs...), name); err != nil {
		return nil, err
	}
	return c, nil
}
