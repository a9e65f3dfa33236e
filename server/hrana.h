/* hrana — libSQL's Hrana protocol on the server's transports (HTTP
 * pipelines with batons, WebSocket hrana2/hrana1); see protocol/hrana.h. */
#ifndef DSQ_SERVER_HRANA_H
#define DSQ_SERVER_HRANA_H

typedef struct dsq_server dsq_server;
typedef struct dsq_http_req dsq_http_req;
typedef struct dsq_hrana_http dsq_hrana_http;
struct dsq_ws_app;

/* The HTTP streams waiting for their next pipeline (srv->hrana). */
dsq_hrana_http *dsq_hrana_http_new(void);
/* Close them all (their transactions roll back) and free the table. */
void dsq_hrana_http_free(dsq_server *srv);
/* Close the HTTP streams idle past rpc.hrana_stream_timeout. */
void dsq_hrana_sweep(dsq_server *srv);
/* GET /v1/db/{db}/v2 and POST /v1/db/{db}/v2/pipeline. */
void dsq_hrana_handle_http(dsq_server *srv, dsq_http_req *req);
/* WebSocket /v1/db/{db}/ (subprotocols hrana2, hrana1). */
extern const struct dsq_ws_app dsq_hrana_ws_app;

#endif
