package cachetier

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults for RedisConfig fields left zero.
const (
	DefaultRedisMaxObject = 8 << 20
	DefaultRedisKeyPrefix = "piraeus:"
	DefaultRedisTimeout   = time.Second
	// DefaultRedisMaxTransfer is the default for RedisConfig.MaxTransfer.
	DefaultRedisMaxTransfer = 256 << 20
)

// redisKeyVersion is bumped when the value layout changes, so that
// deployments of different versions sharing one Redis do not read each
// other's values.
const redisKeyVersion = "v1:"

// RedisConfig configures the Redis tier: one node (URL or one address),
// Sentinel (MasterName with sentinel addresses) or Cluster (several
// addresses), as go-redis' UniversalClient decides.
type RedisConfig struct {
	URL        string   // redis://[user:password@]host:port/db or rediss://
	Addrs      []string // host:port, several for Cluster or Sentinel
	MasterName string   // Sentinel master name
	Username   string
	Password   string
	DB         int
	TLS        bool
	MaxObject  int64 // larger objects are not stored in Redis
	// MaxTransfer bounds objects above MaxObject that are handed to other
	// nodes through Redis for a short while (in chunks) instead of being
	// fetched again by each; 0 means DefaultRedisMaxTransfer, -1 none.
	MaxTransfer int64
	KeyPrefix   string        // namespace, so deployments can share a Redis
	Timeout     time.Duration // bound on one Redis operation
	Logger      *zap.Logger
}

// RedisTier stores objects in Redis so that several nodes share them. Each
// value is the disk tier's header followed by the content; the hash is
// checked on every read. A circuit breaker stops asking Redis for a while
// after consecutive failures, so a dead Redis costs a bounded delay.
type RedisTier struct {
	client      redis.UniversalClient
	prefix      string
	maxObject   int64
	maxTransfer int64
	timeout     time.Duration
	log         *zap.Logger
	br          breaker

	// OnCorrupt, if set, hears of every damaged value found (and deleted).
	OnCorrupt func(key string, err error)
}

// NewRedisTier connects lazily: Redis may be down at start and come later.
func NewRedisTier(cfg RedisConfig) (*RedisTier, error) {
	opts := &redis.UniversalOptions{
		Addrs:      cfg.Addrs,
		MasterName: cfg.MasterName,
		Username:   cfg.Username,
		Password:   cfg.Password,
		DB:         cfg.DB,
	}
	if cfg.URL != "" {
		if len(cfg.Addrs) > 0 {
			return nil, errors.New("redis tier: give a URL or addresses, not both")
		}
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis tier: %w", err)
		}
		opts.Addrs = []string{o.Addr}
		opts.DB, opts.TLSConfig = o.DB, o.TLSConfig
		if o.Username != "" || o.Password != "" {
			opts.Username, opts.Password = o.Username, o.Password
		}
	}
	if len(opts.Addrs) == 0 {
		return nil, errors.New("redis tier: no address")
	}
	if cfg.TLS && opts.TLSConfig == nil {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRedisTimeout
	}
	opts.DialTimeout = cfg.Timeout
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.MaxRetries = 1
	opts.DialerRetries = 1
	opts.DisableIdentity = true
	if cfg.MaxObject <= 0 {
		cfg.MaxObject = DefaultRedisMaxObject
	}
	if cfg.MaxTransfer == 0 {
		cfg.MaxTransfer = DefaultRedisMaxTransfer
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultRedisKeyPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	quietRedisLog.Do(func() {
		// go-redis logs every failed dial to stderr through a global
		// logger; the breaker reports outages once instead.
		redis.SetLogger(discardRedisLog{})
	})
	r := &RedisTier{
		client:      redis.NewUniversalClient(opts),
		prefix:      cfg.KeyPrefix + redisKeyVersion,
		maxObject:   cfg.MaxObject,
		maxTransfer: cfg.MaxTransfer,
		timeout:     cfg.Timeout,
		log:         cfg.Logger,
	}
	r.br.log = cfg.Logger
	return r, nil
}

func (r *RedisTier) Name() string     { return "redis" }
func (r *RedisTier) MaxObject() int64 { return r.maxObject }

// Available reports whether the circuit breaker lets requests through.
func (r *RedisTier) Available() bool { return r.br.allow() }

func (r *RedisTier) objKey(key string) string { return r.prefix + "obj:" + key }

func (r *RedisTier) Get(ctx context.Context, key string) (*Object, error) {
	if !r.br.allow() {
		return nil, ErrMiss
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	val, err := r.client.Get(ctx, r.objKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		r.br.success()
		return nil, ErrMiss
	}
	if err != nil {
		r.br.failure(err)
		return nil, fmt.Errorf("redis tier: %w", err)
	}
	r.br.success()
	meta, err := decodeValue(val)
	if err != nil {
		r.client.Del(ctx, r.objKey(key))
		if r.OnCorrupt != nil {
			r.OnCorrupt(key, err)
		}
		return nil, ErrMiss
	}
	return &Object{Meta: meta, Tier: "redis", data: val[headerSize:]}, nil
}

func decodeValue(val []byte) (Meta, error) {
	if len(val) < headerSize {
		return Meta{}, errors.New("value shorter than its header")
	}
	meta, err := decodeHeader(val[:headerSize])
	if err != nil {
		return Meta{}, err
	}
	data := val[headerSize:]
	if int64(len(data)) != meta.Size {
		return Meta{}, fmt.Errorf("content is %d bytes, header says %d", len(data), meta.Size)
	}
	if sha256.Sum256(data) != meta.Sum {
		return Meta{}, errors.New("content does not match its SHA-256")
	}
	return meta, nil
}

func (r *RedisTier) Put(ctx context.Context, key string, meta Meta, src io.Reader) error {
	if meta.Size > r.maxObject {
		return nil
	}
	data := make([]byte, meta.Size)
	if _, err := io.ReadFull(src, data); err != nil {
		return fmt.Errorf("redis tier: reading %s: %w", key, err)
	}
	return r.put(ctx, key, meta, data)
}

// PutBytes stores data; Tiered uses it to avoid a copy when promoting.
func (r *RedisTier) PutBytes(key string, meta Meta, data []byte) error {
	return r.put(context.Background(), key, meta, data)
}

func (r *RedisTier) put(ctx context.Context, key string, meta Meta, data []byte) error {
	if int64(len(data)) > r.maxObject || !r.br.allow() {
		return nil
	}
	var ttl time.Duration // immutable: no expiry
	if !meta.Expires.IsZero() {
		if ttl = time.Until(meta.Expires); ttl <= 0 {
			return nil
		}
	}
	hdr := encodeHeader(meta)
	val := make([]byte, 0, headerSize+len(data))
	val = append(append(val, hdr[:]...), data...)
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Set(ctx, r.objKey(key), val, ttl).Err(); err != nil {
		r.br.failure(err)
		return fmt.Errorf("redis tier: %w", err)
	}
	r.br.success()
	return nil
}

func (r *RedisTier) Delete(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Del(ctx, r.objKey(key)).Err(); err != nil {
		r.br.failure(err)
		return fmt.Errorf("redis tier: %w", err)
	}
	return nil
}

func (r *RedisTier) Close() error { return r.client.Close() }

// Objects too large for the tier are handed over in chunks that live
// transferTTL: long enough for the nodes waiting on the same fetch.
const (
	transferChunk = 1 << 20
	transferTTL   = 2 * time.Minute
)

// PutTransfer leaves an object larger than MaxObject (up to MaxTransfer)
// in Redis for transferTTL, chunk by chunk and then its header, so that
// nodes waiting for the same fetch copy it instead of fetching it again.
func (r *RedisTier) PutTransfer(ctx context.Context, key string, meta Meta, src io.Reader) error {
	if meta.Size <= r.maxObject || meta.Size > r.maxTransfer || !r.br.allow() {
		return nil
	}
	buf := make([]byte, transferChunk)
	base := r.prefix + "xfer:" + key
	for i, left := 0, meta.Size; left > 0; i++ {
		n := min(left, transferChunk)
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			return fmt.Errorf("redis transfer: reading %s: %w", key, err)
		}
		if err := r.setTimed(ctx, base+":"+strconv.Itoa(i), buf[:n], transferTTL); err != nil {
			return err
		}
		left -= n
	}
	hdr := encodeHeader(meta)
	return r.setTimed(ctx, base, hdr[:], transferTTL)
}

func (r *RedisTier) setTimed(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Set(ctx, key, val, ttl).Err(); err != nil {
		r.br.failure(err)
		return fmt.Errorf("redis transfer: %w", err)
	}
	return nil
}

// GetTransfer returns the header of an object another node handed over
// and a reader of its content, fetched chunk by chunk; ErrMiss if there is
// none. The caller checks the content against meta.Sum.
func (r *RedisTier) GetTransfer(ctx context.Context, key string) (Meta, io.Reader, error) {
	if !r.br.allow() {
		return Meta{}, nil, ErrMiss
	}
	base := r.prefix + "xfer:" + key
	opCtx, cancel := context.WithTimeout(ctx, r.timeout)
	hdr, err := r.client.Get(opCtx, base).Bytes()
	cancel()
	if err != nil || len(hdr) != headerSize {
		return Meta{}, nil, ErrMiss
	}
	meta, err := decodeHeader(hdr)
	if err != nil {
		return Meta{}, nil, ErrMiss
	}
	return meta, &transferReader{ctx: ctx, r: r, base: base, left: meta.Size}, nil
}

type transferReader struct {
	ctx  context.Context
	r    *RedisTier
	base string
	next int
	left int64
	buf  []byte
}

func (t *transferReader) Read(p []byte) (int, error) {
	if len(t.buf) == 0 {
		if t.left <= 0 {
			return 0, io.EOF
		}
		ctx, cancel := context.WithTimeout(t.ctx, t.r.timeout)
		chunk, err := t.r.client.Get(ctx, t.base+":"+strconv.Itoa(t.next)).Bytes()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("redis transfer chunk %d: %w", t.next, err)
		}
		if int64(len(chunk)) > t.left || len(chunk) == 0 {
			return 0, fmt.Errorf("redis transfer chunk %d has a wrong size", t.next)
		}
		t.buf, t.next, t.left = chunk, t.next+1, t.left-int64(len(chunk))
	}
	n := copy(p, t.buf)
	t.buf = t.buf[n:]
	return n, nil
}

// PutNotFound shares an upstream's not-found answer (status and reason)
// for ttl with the other nodes.
func (r *RedisTier) PutNotFound(ctx context.Context, key string, status int, msg string, ttl time.Duration) {
	if !r.br.allow() || ttl <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Set(ctx, r.prefix+"nf:"+key, strconv.Itoa(status)+" "+msg, ttl).Err(); err != nil {
		r.br.failure(err)
		return
	}
	r.br.success()
}

// GetNotFound returns a not-found answer another node shared.
func (r *RedisTier) GetNotFound(ctx context.Context, key string) (status int, msg string, ok bool) {
	if !r.br.allow() {
		return 0, "", false
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	val, err := r.client.Get(ctx, r.prefix+"nf:"+key).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			r.br.failure(err)
		}
		return 0, "", false
	}
	r.br.success()
	code, msg, _ := strings.Cut(val, " ")
	status, err = strconv.Atoi(code)
	return status, msg, err == nil
}

// Lock lengths: a lock lives lockTTL unless renewed, and it is renewed
// every lockTTL/3 while its fetch runs, so it outlives the slowest fetch
// and expires soon after a holder dies.
const (
	lockTTL        = 10 * time.Second
	lockMinBackoff = 10 * time.Millisecond
	lockMaxBackoff = 200 * time.Millisecond
)

var (
	renewScript   = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
)

// ErrUnavailable is returned by Lock while the circuit breaker is open.
var ErrUnavailable = errors.New("redis unavailable")

// Lock takes the cluster-wide lock for key (SET NX PX with a random token),
// waiting with bounded polling while another node holds it, until ctx ends.
// The lock is renewed until unlock is called, which deletes it only if it
// is still ours. Every key the lock uses is single-key, so it works on
// Redis Cluster.
func (r *RedisTier) Lock(ctx context.Context, key string) (unlock func(), err error) {
	lk := r.prefix + "lock:" + key
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	backoff := lockMinBackoff
	for {
		if !r.br.allow() {
			return nil, ErrUnavailable
		}
		opCtx, cancel := context.WithTimeout(ctx, r.timeout)
		ok, err := r.client.SetNX(opCtx, lk, token, lockTTL).Result()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.br.failure(err)
			return nil, fmt.Errorf("redis lock: %w", err)
		}
		r.br.success()
		if ok {
			return r.holdLock(lk, token), nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, lockMaxBackoff)
	}
}

func (r *RedisTier) holdLock(lk, token string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(lockTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
				err := renewScript.Run(ctx, r.client, []string{lk}, token, lockTTL.Milliseconds()).Err()
				cancel()
				if err != nil {
					r.log.Warn("renewing redis lock failed", zap.String("lock", lk), zap.Error(err))
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			if err := releaseScript.Run(ctx, r.client, []string{lk}, token).Err(); err != nil {
				r.log.Warn("releasing redis lock failed; it expires by itself", zap.String("lock", lk), zap.Error(err))
			}
		})
	}
}

var quietRedisLog sync.Once

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

// breaker opens after breakerThreshold consecutive failures and then lets
// one request through per cooldown, doubling the cooldown up to a limit
// while Redis stays down.
type breaker struct {
	log *zap.Logger

	mu        sync.Mutex
	failures  int
	cooldown  time.Duration
	openUntil time.Time // no request before this, but one probe after it
	tripped   time.Time // when the breaker last opened or backed off
	open      bool
}

const (
	breakerThreshold   = 3
	breakerMinCooldown = 500 * time.Millisecond
	breakerMaxCooldown = 15 * time.Second
)

func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if time.Now().Before(b.openUntil) {
		return false
	}
	// Half-open: this caller probes; the others wait for its outcome.
	b.openUntil = time.Now().Add(b.cooldown)
	return true
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		b.log.Warn("redis is reachable again; using the redis tier")
	}
	b.failures, b.open, b.cooldown = 0, false, 0
}

func (b *breaker) failure(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.failures++
	if b.open {
		// A failed probe backs off further; requests that were already
		// under way when the breaker opened do not.
		if now.Sub(b.tripped) >= b.cooldown {
			b.cooldown = min(b.cooldown*2, breakerMaxCooldown)
			b.openUntil, b.tripped = now.Add(b.cooldown), now
		}
		return
	}
	if b.failures < breakerThreshold {
		return
	}
	b.log.Warn("redis unavailable; bypassing the redis tier", zap.Error(err))
	b.open, b.cooldown = true, breakerMinCooldown
	b.openUntil, b.tripped = now.Add(b.cooldown), now
}

var (
	_ Tier        = (*RedisTier)(nil)
	_ bytesPutter = (*RedisTier)(nil)
)
