package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// trivialAnswer is a small RecommendResponse-shaped message: user_id "u" (1), one item with
// campaign_id "c1" (2), cached true (4).
func trivialAnswer() []byte {
	item := protowire.AppendTag(nil, 1, protowire.BytesType)
	item = protowire.AppendString(item, "c1")
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, "u")
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, item)
	b = protowire.AppendTag(b, 4, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

func serveTrivialCommand(args []string) error {
	fs := flag.NewFlagSet("serve-trivial", flag.ExitOnError)
	host := fs.String("host", "127.0.0.1", "address to listen on")
	httpPort := fs.Int("http-port", 0, "HTTP port (0: a free one)")
	grpcPort := fs.Int("grpc-port", 0, "gRPC port (0: a free one)")
	httpBody := fs.String("http-body", `{"user_id":"u","cached":true,"items":[{"campaign_id":"c1"}]}`, "every HTTP answer's body")
	grpcBody := fs.String("grpc-body", base64.StdEncoding.EncodeToString(trivialAnswer()), "every gRPC answer, base64")
	_ = fs.Parse(args)
	answer, err := base64.StdEncoding.DecodeString(*grpcBody)
	if err != nil {
		return fmt.Errorf("-grpc-body: %w", err)
	}
	httpListener, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*httpPort)))
	if err != nil {
		return err
	}
	grpcListener, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*grpcPort)))
	if err != nil {
		return err
	}
	body := []byte(*httpBody)
	go http.Serve(httpListener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	server := grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var request []byte
			if err := stream.RecvMsg(&request); err != nil {
				return err
			}
			return stream.SendMsg(answer)
		}),
	)
	go server.Serve(grpcListener)
	ports := map[string]int{
		"http": httpListener.Addr().(*net.TCPAddr).Port,
		"grpc": grpcListener.Addr().(*net.TCPAddr).Port,
	}
	if err := json.NewEncoder(os.Stdout).Encode(ports); err != nil {
		return err
	}
	// Serve until the parent closes our standard input (or goes away).
	_, _ = io.Copy(io.Discard, os.Stdin)
	server.Stop()
	return nil
}
