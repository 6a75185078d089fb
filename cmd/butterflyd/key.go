package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/butterfly-go/butterfly/internal/config"
	"github.com/butterfly-go/butterfly/internal/crypto"
)

// apiKey returns the key the API requires: the file given with -k (which
// must exist, as in the original), else the auto key file (created with a
// random key when missing), else none (nil) with a warning.
func apiKey(cfg config.Config, log *slog.Logger) ([]byte, error) {
	switch {
	case cfg.KeyFile != "":
		key, err := crypto.LoadKeyFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load encryption key %s: %w", cfg.KeyFile, err)
		}
		log.Info("API encryption enabled: clear-text requests are refused", "key", cfg.KeyFile)
		return key, nil
	case cfg.AutoKeyFile != "":
		key, created, err := autoKey(cfg.AutoKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load or create the API key %s: %w", cfg.AutoKeyFile, err)
		}
		if created {
			log.Info("generated a new API key", "key", cfg.AutoKeyFile)
		}
		log.Info("API encryption enabled: clear-text requests are refused; clients need the key file (butterfly -k)", "key", cfg.AutoKeyFile)
		if st, err := os.Stat(cfg.AutoKeyFile); err == nil && st.Mode().Perm()&0o004 != 0 {
			log.Warn("the API key file is readable by every user: anyone can reconfigure this switch", "key", cfg.AutoKeyFile, "mode", st.Mode().Perm())
		}
		return key, nil
	}
	log.Warn(noKeyWarning(cfg.Endpoint), "endpoint", cfg.Endpoint)
	return nil, nil
}

// autoKey reads the key file at path or, when it does not exist, creates
// it with a random key in the original's format (base64 of 32 bytes), mode
// 0600, its missing directories 0700. Two daemons creating it at the same
// time agree on one key: the file appears complete, by a hard link, or
// not at all.
func autoKey(path string) (key []byte, created bool, err error) {
	key, err = crypto.LoadKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, false, err
	}
	tmp, err := os.CreateTemp(dir, ".api-key-*")
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another daemon created it first: use its key.
			key, err = crypto.LoadKeyFile(path)
			return key, false, err
		}
		return nil, false, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return raw, true, nil
}
