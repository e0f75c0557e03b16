package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec passes serialized messages through as they are: the requests file holds them
// serialized by the real protobuf classes, and the checks read the answers' bytes. Its name
// is "proto", so calls carry the usual content-type (application/grpc+proto).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("raw codec: cannot send %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot receive into %T", v)
	}
	// A copy: gRPC may reuse data's buffer once Unmarshal returns.
	*m = append((*m)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// grpcCaller sends unary calls over o.conns connections, taken in turn.
type grpcCaller struct {
	conns []*grpc.ClientConn
	next  atomic.Uint64
	md    metadata.MD
}

func newGRPCCaller(o *runOptions) (caller, error) {
	md := metadata.MD{}
	for _, kv := range o.headers {
		md.Append(strings.ToLower(kv[0]), kv[1])
	}
	c := &grpcCaller{md: md}
	for range o.conns {
		conn, err := grpc.NewClient(
			o.target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
		)
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns = append(c.conns, conn)
		if err := ready(conn, 10*time.Second); err != nil {
			c.close()
			return nil, fmt.Errorf("gRPC %s: %w", o.target, err)
		}
	}
	return c, nil
}

// ready connects conn and waits until it is ready, so that no measured call pays for it.
func ready(conn *grpc.ClientConn, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	conn.Connect()
	for {
		state := conn.GetState()
		if state == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, state) {
			return fmt.Errorf("not ready in %s (last state %s)", limit, state)
		}
	}
}

func (c *grpcCaller) call(ctx context.Context, r *Request) ([]byte, error) {
	conn := c.conns[c.next.Add(1)%uint64(len(c.conns))]
	var answer []byte
	err := conn.Invoke(metadata.NewOutgoingContext(ctx, c.md), r.Path, r.Body, &answer)
	if err != nil {
		if s, ok := status.FromError(err); ok {
			return nil, &callError{kind: "grpc_" + s.Code().String(), detail: s.Message()}
		}
		return nil, err
	}
	return answer, nil
}

func (c *grpcCaller) close() {
	for _, conn := range c.conns {
		conn.Close()
	}
}
