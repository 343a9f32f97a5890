// Package s3tier is the object-storage tier of the cache: a bucket
// (S3 or compatible, through minio-go) as the tier of record, each object
// tagged under the fleet key and checked whole before it is served. Only a
// process that configures it links minio-go.
package s3tier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/breaker"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
)

// Config configures the S3 tier.
type Config struct {
	// Endpoint is the S3 service's URL, e.g. https://s3.eu-west-1.amazonaws.com
	// or http://127.0.0.1:9000.
	Endpoint  string
	Bucket    string
	Region    string
	Prefix    string // of every object name; may be empty
	AccessKey string
	SecretKey string
	// Timeout bounds one operation's answer (a stat, a list, a small put)
	// and any wait for a transfer's next bytes: a bucket that stalls fails
	// within it. Default 10s.
	Timeout time.Duration
	// SpoolDir holds the temp files of uploads and of verified downloads.
	// Default: the system's temp directory.
	SpoolDir string
	// AbandonedUploads is the age at which a multipart upload under
	// Prefix that was begun and never completed or aborted counts as
	// abandoned (its edge died in mid-upload, or the bucket failed before
	// the edge could abort it) and is aborted, so that its parts stop
	// using the bucket's space: checked at start and then every hour.
	// Default DefaultAbandonedUploads; longer than any upload may take.
	AbandonedUploads time.Duration
	// Transport, if set, carries the requests (tests trust a CA with it).
	Transport http.RoundTripper
	// Key signs every object's metadata; an object whose tag fails it is
	// refused, deleted and counted. Required.
	Key    *fleetkey.Key
	Logger *zap.Logger
}

// Tier keeps every object in a bucket of an S3-compatible store, so that
// edges with no persistent disk share what they fetched: a tier of record.
// An object's body is its content alone (so a pre-signed URL serves it as
// it is); its key, size, SHA-256, fetch time and expiry are in its
// metadata, and a read checks all of them, the content's hash included,
// before the object is served. Uploads stream from the spool (multipart
// for large zips); an object appears only once whole. A breaker stops
// asking a bucket that fails or stalls, for a while.
type Tier struct {
	cfg       Config
	client    *minio.Client
	transport *http.Transport // nil when the config gave one
	br        *breaker.Breaker
	log       *zap.Logger

	ctx      context.Context // ends with Close: the sweep of uploads
	cancel   context.CancelFunc
	swept    chan struct{} // closed after the first sweep of uploads
	sweeping sync.WaitGroup
}

// DefaultAbandonedUploads is Config.AbandonedUploads's default.
const DefaultAbandonedUploads = 24 * time.Hour

// New returns a tier on cfg.Bucket, which must exist.
func New(cfg Config) (*Tier, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("s3 tier: endpoint %q: want http(s)://host[:port]", cfg.Endpoint)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("s3 tier: no bucket")
	}
	if cfg.Key == nil {
		return nil, errors.New("s3 tier: no fleet key; " + fleetkey.Howto)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if n := cachetier.SweepTemp(cfg.SpoolDir, spoolPrefix); n > 0 {
		cfg.Logger.Info("removed temp files that dead processes left", zap.String("dir", cfg.SpoolDir), zap.Int("files", n))
	}
	if cfg.AbandonedUploads <= 0 {
		cfg.AbandonedUploads = DefaultAbandonedUploads
	}
	s := &Tier{cfg: cfg, br: breaker.New("s3 bucket "+cfg.Bucket, cfg.Logger), log: cfg.Logger,
		swept: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.Transport == nil {
		s.transport = newS3Transport(cfg.Timeout)
		cfg.Transport = s.transport
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    u.Scheme == "https",
		Region:    cfg.Region,
		Transport: cfg.Transport,
		// One attempt (minio-go counts attempts): a store that fails or
		// stalls is left to the breaker, and the request goes upstream
		// after one timeout, rather than after one per attempt.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 tier: %w", err)
	}
	s.client = client
	s.sweeping.Add(1)
	go s.sweepUploads()
	return s, nil
}

// uploadSweepEvery is how often abandoned uploads are looked for.
const uploadSweepEvery = time.Hour

// sweepUploads aborts abandoned multipart uploads now and then every
// uploadSweepEvery, until Close.
func (s *Tier) sweepUploads() {
	defer s.sweeping.Done()
	first := true
	for {
		s.abortAbandoned()
		if first {
			close(s.swept)
			first = false
		}
		t := time.NewTimer(uploadSweepEvery)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// maxUploadsSwept bounds the uploads one sweep looks at.
const maxUploadsSwept = 10000

// abortAbandoned aborts the multipart uploads under the tier's prefix
// begun more than AbandonedUploads ago.
func (s *Tier) abortAbandoned() {
	ctx := s.ctx
	var old []minio.ObjectMultipartInfo
	seen := 0
	for u := range s.client.ListIncompleteUploads(ctx, s.cfg.Bucket, s.cfg.Prefix, true) {
		if u.Err != nil {
			s.log.Warn("listing the bucket's incomplete uploads failed", zap.Error(u.Err))
			return
		}
		if seen++; seen > maxUploadsSwept {
			break
		}
		if time.Since(u.Initiated) > s.cfg.AbandonedUploads {
			old = append(old, u)
		}
	}
	aborted := 0
	core := minio.Core{Client: s.client}
	for _, u := range old {
		// By its upload id: a newer upload of the same object, by a live
		// edge, goes on.
		if err := core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.Key, u.UploadID); err != nil {
			s.log.Warn("aborting an abandoned upload failed", zap.String("object", u.Key), zap.Error(err))
			continue
		}
		aborted++
	}
	if aborted > 0 {
		s.log.Info("aborted abandoned multipart uploads", zap.Int("uploads", aborted), zap.Duration("older_than", s.cfg.AbandonedUploads))
	}
}

// Swept is closed once the first sweep of abandoned uploads has ended.
func (s *Tier) Swept() <-chan struct{} { return s.swept }

// newS3Transport returns a transport whose connections fail when the
// store sends or takes nothing for timeout: a stalled bucket ends a
// download or an upload of any size within that time, where a timeout on
// the whole transfer would have to allow for the largest zip.
func newS3Transport(timeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stallConn{Conn: c, timeout: timeout}, nil
	}
	t.ResponseHeaderTimeout = timeout
	// Idle connections close before their pending read would time out.
	t.IdleConnTimeout = timeout / 2
	t.DisableCompression = true
	t.MaxIdleConnsPerHost = 64
	return t
}

// stallConn sets a deadline before each read and write.
type stallConn struct {
	net.Conn
	timeout time.Duration
}

func (c *stallConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

func (s *Tier) Name() string     { return "s3" }
func (s *Tier) MaxObject() int64 { return 1<<63 - 1 }

// Object names: the key itself under the prefix when it fits S3's limit of
// 1024 bytes, its hash otherwise.
func (s *Tier) objectName(key string) string {
	if name := s.cfg.Prefix + "o/" + key; len(name) <= 1024 {
		return name
	}
	sum := sha256.Sum256([]byte(key))
	return s.cfg.Prefix + "h/" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// Metadata of an object, as x-amz-meta-piraeus-*.
const (
	metaKey     = "Piraeus-Key"
	metaSum     = "Piraeus-Sha256"
	metaStored  = "Piraeus-Stored"
	metaExpires = "Piraeus-Expires"
	metaTag     = "Piraeus-Tag"
	kindS3      = fleetkey.KindS3Object
)

// metaTagOf is the tag of an object's metadata: its key, size, SHA-256
// (and so its content), fetch time and expiry.
func metaTagOf(fk *fleetkey.Key, key string, m cachetier.Meta) []byte {
	return fk.Sum(kindS3, metaParts(key, m)...)
}

func metaParts(key string, m cachetier.Meta) [][]byte {
	var exp int64
	if !m.Expires.IsZero() {
		exp = m.Expires.UnixNano()
	}
	return [][]byte{[]byte(key), []byte(strconv.FormatInt(m.Size, 10)), m.Sum[:],
		[]byte(strconv.FormatInt(m.Stored.UnixNano(), 10)), []byte(strconv.FormatInt(exp, 10))}
}

func encodeMeta(fk *fleetkey.Key, key string, m cachetier.Meta) map[string]string {
	md := map[string]string{
		metaKey:    url.PathEscape(key),
		metaSum:    base64.StdEncoding.EncodeToString(m.Sum[:]),
		metaStored: strconv.FormatInt(m.Stored.UnixNano(), 10),
		metaTag:    base64.StdEncoding.EncodeToString(metaTagOf(fk, key, m)),
	}
	if !m.Expires.IsZero() {
		md[metaExpires] = strconv.FormatInt(m.Expires.UnixNano(), 10)
	}
	return md
}

// decodeMeta reads an object's metadata, checking that it names key and
// that its tag is good (else cachetier.ErrBadTag).
func decodeMeta(fk *fleetkey.Key, key string, info minio.ObjectInfo) (cachetier.Meta, error) {
	get := func(k string) string {
		for mk, v := range info.UserMetadata {
			if strings.EqualFold(mk, k) {
				return v
			}
		}
		return ""
	}
	if stored, err := url.PathUnescape(get(metaKey)); err != nil || stored != key {
		return cachetier.Meta{}, fmt.Errorf("stored under key %q, read as %q", cachetier.Truncate(get(metaKey)), cachetier.Truncate(key))
	}
	sum, err := base64.StdEncoding.DecodeString(get(metaSum))
	if err != nil || len(sum) != 32 {
		return cachetier.Meta{}, errors.New("no SHA-256 in the metadata")
	}
	m := cachetier.Meta{Size: info.Size}
	copy(m.Sum[:], sum)
	if n, err := strconv.ParseInt(get(metaStored), 10, 64); err == nil {
		m.Stored = time.Unix(0, n)
	}
	if v := get(metaExpires); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return cachetier.Meta{}, errors.New("bad expiry in the metadata")
		}
		m.Expires = time.Unix(0, n)
	}
	tag, err := base64.StdEncoding.DecodeString(get(metaTag))
	if err != nil || !fk.Check(tag, kindS3, metaParts(key, m)...) {
		return cachetier.Meta{}, cachetier.ErrBadTag
	}
	return m, nil
}

func isNoSuchKey(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound"
}

// do runs op within the operation timeout if the breaker allows it.
func (s *Tier) do(ctx context.Context, op func(ctx context.Context) error) error {
	if !s.br.Allow() {
		return cachetier.ErrMiss
	}
	opCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err := op(opCtx)
	switch {
	case err == nil || isNoSuchKey(err):
		s.br.Success()
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		// the caller gave up, or its own deadline passed
	default:
		s.br.Failure(err)
	}
	return err
}

// stat returns the checked meta of key's object.
func (s *Tier) stat(ctx context.Context, key string) (cachetier.Meta, error) {
	var info minio.ObjectInfo
	err := s.do(ctx, func(ctx context.Context) (err error) {
		info, err = s.client.StatObject(ctx, s.cfg.Bucket, s.objectName(key), minio.StatObjectOptions{})
		return err
	})
	if errors.Is(err, cachetier.ErrMiss) || isNoSuchKey(err) {
		return cachetier.Meta{}, cachetier.ErrMiss
	}
	if err != nil {
		return cachetier.Meta{}, fmt.Errorf("s3 tier: %w", err)
	}
	meta, err := decodeMeta(s.cfg.Key, key, info)
	if err != nil {
		s.rejectMeta(ctx, key, err)
		return cachetier.Meta{}, cachetier.ErrMiss
	}
	return meta, nil
}

// Holds reports whether the bucket holds key's object, from its metadata
// alone (checked as a read's is: a value no edge signed is not held).
func (s *Tier) Holds(ctx context.Context, key string) (bool, error) {
	_, err := s.stat(ctx, key)
	if errors.Is(err, cachetier.ErrMiss) {
		return false, nil
	}
	return err == nil, err
}

// Get downloads key's object into a spool file (or memory, when small)
// while hashing it, and returns it only if it is whole and its hash
// matches: nothing is served before it has been checked.
func (s *Tier) Get(ctx context.Context, key string) (*cachetier.Object, error) {
	if !s.br.Allow() {
		return nil, cachetier.ErrMiss
	}
	// The request and its answer's headers within the timeout; the body
	// of a large object may take longer, bounded by the connection's
	// stall deadline.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(s.cfg.Timeout, func() { cancel(breaker.ErrStalled) })
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, s.objectName(key), minio.GetObjectOptions{})
	if err != nil {
		stall.Stop()
		return nil, s.readFailed(ctx, err)
	}
	defer obj.Close()
	info, err := obj.Stat() // sends the request: one round trip in all
	if !stall.Stop() && err == nil {
		err = context.Cause(ctx) // the answer came as the timeout passed
	}
	if err != nil {
		return nil, s.readFailed(ctx, err)
	}
	s.br.Success()
	meta, err := decodeMeta(s.cfg.Key, key, info)
	if err != nil {
		s.rejectMeta(ctx, key, err)
		return nil, cachetier.ErrMiss
	}
	if meta.Size <= cachetier.SmallObject {
		data, err := io.ReadAll(io.LimitReader(obj, meta.Size+1))
		if err != nil {
			return nil, s.readFailed(ctx, err)
		}
		if int64(len(data)) != meta.Size || sha256.Sum256(data) != meta.Sum {
			s.reject(ctx, key, errors.New("content does not match its size and SHA-256"))
			return nil, cachetier.ErrMiss
		}
		return cachetier.NewTierObject(meta, "s3", data), nil
	}
	sp, err := s.NewSpool(key)
	if err != nil {
		return nil, fmt.Errorf("s3 tier: %w", err)
	}
	defer sp.Close()
	if err := sp.Fill(obj, meta.Size); err != nil {
		if errors.Is(err, cachetier.ErrTooLarge) {
			s.reject(ctx, key, err)
			return nil, cachetier.ErrMiss
		}
		return nil, s.readFailed(ctx, err)
	}
	if got := sp.Meta(time.Time{}); got.Size != meta.Size || got.Sum != meta.Sum {
		s.reject(ctx, key, errors.New("content does not match its size and SHA-256"))
		return nil, cachetier.ErrMiss
	}
	return sp.Object(meta, "s3"), nil
}

// readFailed records a failed read of ctx's request; a read cancelled
// for its stall counts as one, one its caller gave up does not.
func (s *Tier) readFailed(ctx context.Context, err error) error {
	if isNoSuchKey(err) {
		s.br.Success()
		return cachetier.ErrMiss
	}
	if cause := context.Cause(ctx); errors.Is(cause, breaker.ErrStalled) {
		err = fmt.Errorf("%w: %w", cause, err)
	} else if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return err // the caller gave up, or its own deadline passed
	}
	s.br.Failure(err)
	return fmt.Errorf("s3 tier: reading: %w", err)
}

// rejectMeta is reject of an object whose metadata failed, counted when
// its tag did.
func (s *Tier) rejectMeta(ctx context.Context, key string, why error) {
	if errors.Is(why, cachetier.ErrBadTag) {
		fleetkey.Rejected(kindS3)
	}
	s.reject(ctx, key, why)
}

// reject deletes an object that fails its checks, so it is fetched again.
func (s *Tier) reject(ctx context.Context, key string, why error) {
	s.do(context.WithoutCancel(ctx), func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.cfg.Bucket, s.objectName(key), minio.RemoveObjectOptions{})
	})
	s.log.Error("s3 object rejected and deleted; it will be fetched again", zap.String("key", cachetier.Truncate(key)), zap.Error(why))
}

func (s *Tier) put(ctx context.Context, key string, meta cachetier.Meta, r io.Reader, timeout bool) error {
	if !s.br.Allow() {
		return errors.New("s3 tier: bucket unavailable")
	}
	opts := minio.PutObjectOptions{
		UserMetadata: encodeMeta(s.cfg.Key, key, meta),
		ContentType:  "application/octet-stream",
		PartSize:     16 << 20, // one part in memory at a time
		NumThreads:   1,
	}
	if timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
	}
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.objectName(key), r, meta.Size, opts)
	if err != nil {
		s.br.Failure(err)
		return fmt.Errorf("s3 tier: storing %s: %w", cachetier.Truncate(key), err)
	}
	s.br.Success()
	return nil
}

// Put stores a small object.
func (s *Tier) Put(ctx context.Context, key string, meta cachetier.Meta, data []byte) error {
	if int64(len(data)) != meta.Size || sha256.Sum256(data) != meta.Sum {
		return fmt.Errorf("s3 tier: %s does not match its meta", cachetier.Truncate(key))
	}
	return s.put(ctx, key, meta, bytes.NewReader(data), true)
}

// spoolPrefix names the tier's temp files in SpoolDir, of which New
// sweeps those that dead processes left.
const spoolPrefix = "piraeus-s3-"

// NewSpool starts a temp file for an object of key, in SpoolDir.
func (s *Tier) NewSpool(key string) (*cachetier.Spool, error) {
	f, err := cachetier.CreateTemp(s.cfg.SpoolDir, spoolPrefix+"*")
	if err != nil {
		return nil, err
	}
	return cachetier.NewSpoolFile(f, key)
}

// Commit uploads the spool (streamed; multipart when large) and returns the
// object read from the spool's file, which is no longer needed by name.
func (s *Tier) Commit(ctx context.Context, key string, sp *cachetier.Spool, meta cachetier.Meta) (*cachetier.Object, error) {
	if sp.Done() || sp.Key() != key {
		return nil, fmt.Errorf("s3 tier: spool of %q cannot be committed as %q", cachetier.Truncate(sp.Key()), cachetier.Truncate(key))
	}
	if err := s.Upload(ctx, key, meta, sp.Reader()); err != nil {
		return nil, err
	}
	return sp.Object(meta, "s3"), nil
}

// Upload streams meta.Size bytes of r into key's object, bounded by ctx
// alone (a large zip takes longer than one operation's timeout).
func (s *Tier) Upload(ctx context.Context, key string, meta cachetier.Meta, r io.Reader) error {
	return s.put(ctx, key, meta, r, false)
}

func (s *Tier) Delete(ctx context.Context, key string) error {
	err := s.do(ctx, func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.cfg.Bucket, s.objectName(key), minio.RemoveObjectOptions{})
	})
	if err != nil && !errors.Is(err, cachetier.ErrMiss) && !isNoSuchKey(err) {
		return fmt.Errorf("s3 tier: %w", err)
	}
	return nil
}

// Check writes and removes a small object: the bucket takes objects.
func (s *Tier) Check(ctx context.Context) error {
	name := s.cfg.Prefix + "check/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	err := s.do(ctx, func(ctx context.Context) error {
		if _, err := s.client.PutObject(ctx, s.cfg.Bucket, name, strings.NewReader("ok"), 2, minio.PutObjectOptions{}); err != nil {
			return err
		}
		return s.client.RemoveObject(ctx, s.cfg.Bucket, name, minio.RemoveObjectOptions{})
	})
	if errors.Is(err, cachetier.ErrMiss) {
		return errors.New("bucket unavailable")
	}
	return err
}

// List lists the keys of the objects in the bucket, in the order of their
// names; a token is the last name read.
func (s *Tier) List(ctx context.Context, after string, limit int) ([]string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	prefix := s.cfg.Prefix + "o/"
	if after == "" {
		after = prefix
	}
	var keys []string
	for info := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, StartAfter: after, Recursive: true}) {
		if info.Err != nil {
			return nil, "", fmt.Errorf("s3 tier: listing: %w", info.Err)
		}
		keys = append(keys, strings.TrimPrefix(info.Key, prefix))
		if len(keys) >= limit {
			return keys, info.Key, nil
		}
	}
	return keys, "", nil
}

// Presign returns a URL that serves key's object, the content alone, for
// ttl, if the object is at least minSize bytes; cachetier.ErrMiss otherwise.
func (s *Tier) Presign(ctx context.Context, key string, minSize int64, ttl time.Duration) (string, error) {
	meta, err := s.stat(ctx, key)
	if err != nil {
		return "", err
	}
	if meta.Size < minSize {
		return "", cachetier.ErrMiss
	}
	u, err := s.client.PresignedGetObject(ctx, s.cfg.Bucket, s.objectName(key), ttl, nil)
	if err != nil {
		return "", fmt.Errorf("s3 tier: %w", err)
	}
	return u.String(), nil
}

// Close ends the sweep of uploads and closes the idle connections to the
// store.
func (s *Tier) Close() error {
	s.cancel()
	s.sweeping.Wait()
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	return nil
}

// ProbeAt is when the breaker next lets a request reach a bucket that
// failed; a time in the past when the bucket is in use.
func (s *Tier) ProbeAt() time.Time { return s.br.ProbeAt() }

// Shared reports that other nodes write the bucket too: a .mod or .zip
// read from it is checked against the checksum database.
func (s *Tier) Shared() bool { return true }

// Reject deletes a value that failed the caller's check.
func (s *Tier) Reject(ctx context.Context, key string, why error) { s.reject(ctx, key, why) }

var (
	_ cachetier.Store    = (*Tier)(nil)
	_ cachetier.Lister   = (*Tier)(nil)
	_ cachetier.Uploader = (*Tier)(nil)
	_ cachetier.Checker  = (*Tier)(nil)
)
