package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/config/signed"
)

const configUsage = `usage: ferry config keygen -out FILE
           a new Ed25519 signing key: the private key to FILE (PKCS #8
           PEM, mode 0600, never on a gateway), the public key on stdout
           for remote_config.trusted_keys
       ferry config sign -key FILE -version N -gateway ID|* [-o OUT] [-root DIR] [-force] CONFIG.yaml
           check CONFIG.yaml as a pushed configuration (as ferry check
           does; with -root, also the files it names, under DIR) and
           write it signed, for gateway ID or every gateway (*), to OUT
           (default stdout); -force signs one with problems
       ferry config verify (-pub KEY|FILE ... | -c LOCAL.yaml) [-gateway ID] SIGNED
           check the signature of SIGNED; with -c, against the trusted
           keys and gateway ID of the gateway's local file, and its
           document as that gateway would
`

// runConfig signs configurations for remote_config and checks them.
func runConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, configUsage)
		return 2
	}
	switch args[0] {
	case "keygen":
		return configKeygen(args[1:], stdout, stderr)
	case "sign":
		return configSign(args[1:], stdout, stderr)
	case "verify":
		return configVerify(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, configUsage)
		return 0
	}
	fmt.Fprintf(stderr, "ferry config: unknown command %q\n%s", args[0], configUsage)
	return 2
}

// configFlags is the flag set of a config subcommand.
func configFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("config "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, configUsage)
		fs.PrintDefaults()
	}
	return fs
}

func configKeygen(args []string, stdout, stderr io.Writer) int {
	fs := configFlags("keygen", stderr)
	out := fs.String("out", "", "file to write the private key to (must not exist)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fmt.Fprintln(stderr, "ferry config keygen:", err)
		return 1
	}
	pemKey, err := signed.MarshalPrivateKey(key)
	if err != nil {
		fmt.Fprintln(stderr, "ferry config keygen:", err)
		return 1
	}
	if err := writeNew(*out, pemKey); err != nil {
		fmt.Fprintln(stderr, "ferry config keygen:", err)
		return 1
	}
	fmt.Fprintln(stdout, signed.EncodePublicKey(pub))
	fmt.Fprintf(stderr, "private key %s written to %s: keep it off the gateways; add the public key above to their remote_config.trusted_keys\n",
		signed.KeyID(pub), *out)
	return 0
}

// writeNew creates path, mode 0600, with b; it must not exist.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

func configSign(args []string, stdout, stderr io.Writer) int {
	fs := configFlags("sign", stderr)
	keyFile := fs.String("key", "", "private key file (ferry config keygen, or openssl genpkey -algorithm ed25519)")
	version := fs.Uint64("version", 0, "the configuration's version, above every version the gateways have had")
	gw := fs.String("gateway", "", `the gateway ID it is for, or "*" for every gateway`)
	out := fs.String("o", "", "output file (default stdout)")
	root := fs.String("root", "", "also check the files the configuration names, as on a machine whose root file system is here (/ for this one)")
	force := fs.Bool("force", false, "sign even when the check finds problems")
	if fs.Parse(args) != nil {
		return 2
	}
	if *keyFile == "" || *gw == "" || *version == 0 || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	pemKey, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "ferry config sign:", err)
		return 1
	}
	key, err := signed.ParsePrivateKey(pemKey)
	if err != nil {
		fmt.Fprintf(stderr, "ferry config sign: %s: %v\n", *keyFile, err)
		return 1
	}
	doc, err := readConfigFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "ferry config sign:", err)
		return 1
	}
	if !checkPushed(doc, path, *gw, key.Public().(ed25519.PublicKey), *root, stderr) {
		if !*force {
			fmt.Fprintln(stderr, "ferry config sign: not signed (-force signs it anyway)")
			return 1
		}
		fmt.Fprintln(stderr, "ferry config sign: signing it anyway (-force): the gateways will refuse it")
	}
	env, err := signed.Sign(doc, *version, *gw, key)
	if err != nil {
		fmt.Fprintln(stderr, "ferry config sign:", err)
		return 1
	}
	if *out == "" {
		_, err = stdout.Write(env)
	} else {
		err = os.WriteFile(*out, env, 0o644)
	}
	if err != nil {
		fmt.Fprintln(stderr, "ferry config sign:", err)
		return 1
	}
	if *out != "" {
		fmt.Fprintf(stderr, "%s: version %d for gateway %s, signed by key %s\n", *out, *version, *gw, signed.KeyID(key.Public().(ed25519.PublicKey)))
	}
	return 0
}

// readConfigFile reads a configuration file of at most
// config.MaxFileSize bytes.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > config.MaxFileSize {
		return nil, fmt.Errorf("%s: more than the %d bytes a configuration may have", path, config.MaxFileSize)
	}
	return b, nil
}

// checkPushed checks doc as a configuration pushed to gateway gw (or every
// gateway) whose trusted key is pub: config.LoadRemote, then what ferry
// check builds, and with root the files it names. It prints the problems
// and reports whether there were none.
func checkPushed(doc []byte, path, gw string, pub ed25519.PublicKey, root string, stderr io.Writer) bool {
	var local *config.Config // every gateway: gateway_id is not compared
	if gw != signed.AnyGateway {
		local = &config.Config{GatewayID: gw, RemoteConfig: config.RemoteConfig{
			Enabled: true, TrustedKeys: []string{signed.EncodePublicKey(pub)}}}
		local.SetDefaults()
	}
	cfg, err := config.LoadRemote(doc, path, local)
	var problems config.Errors
	if err == nil {
		if root != "" {
			_, err = gateway.CheckConfig(cfg, gateway.HostCheck{Root: root})
		} else {
			err = gateway.Check(cfg)
		}
	}
	switch {
	case err == nil:
		return true
	case errors.As(err, &problems):
		printProblems(stderr, path, problems)
	default:
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
	}
	return false
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func configVerify(args []string, stdout, stderr io.Writer) int {
	fs := configFlags("verify", stderr)
	var pubs stringList
	fs.Var(&pubs, "pub", "a trusted public key, or a file holding one (base64 or PEM); repeatable")
	localPath := fs.String("c", "", "the gateway's local configuration file: its remote_config.trusted_keys and gateway_id")
	gw := fs.String("gateway", "", "the gateway ID to verify for (default: the local file's, else the envelope's)")
	if fs.Parse(args) != nil {
		return 2
	}
	if (len(pubs) == 0) == (*localPath == "") || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	var keys []ed25519.PublicKey
	var local *config.Config
	if *localPath != "" {
		var err error
		if local, err = config.Load(*localPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if keys, err = local.RemoteConfig.PublicKeys(); err == nil && len(keys) == 0 {
			err = fmt.Errorf("%s: remote_config.trusted_keys lists no key", *localPath)
		}
		if err != nil {
			fmt.Fprintln(stderr, "ferry config verify:", err)
			return 1
		}
		if *gw == "" {
			*gw = local.GatewayID
		}
	}
	for _, p := range pubs {
		k, err := readPublicKey(p)
		if err != nil {
			fmt.Fprintln(stderr, "ferry config verify:", err)
			return 1
		}
		keys = append(keys, k)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "ferry config verify:", err)
		return 1
	}
	if *gw == "" {
		if e, err := signed.Parse(b); err == nil {
			*gw = e.Gateway // any gateway it names: only the signature is checked
		}
	}
	env, err := signed.Verify(b, keys, *gw, 0)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	if local != nil {
		cfg, err := config.LoadRemote(env.Document, path, local)
		if err == nil {
			err = gateway.CheckRemote(local, cfg)
		}
		var problems config.Errors
		switch {
		case err == nil:
		case errors.As(err, &problems):
			// Lines in the file: the document starts after the header.
			header := bytes.Count(b[:len(b)-len(env.Document)], []byte("\n"))
			for _, p := range problems {
				if p.Line > 0 {
					p.Line += header
				}
			}
			printProblems(stderr, path, problems)
			return 1
		default:
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "%s: ok: version %d for gateway %s, signed by key %s\n", path, env.Version, env.Gateway, env.KeyID)
	return 0
}

// readPublicKey reads a public key given as text or as a file holding it.
func readPublicKey(s string) (ed25519.PublicKey, error) {
	if k, err := signed.ParsePublicKey(s); err == nil {
		return k, nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("-pub %s: neither a public key nor a file: %w", s, err)
	}
	k, err := signed.ParsePublicKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	return k, nil
}
