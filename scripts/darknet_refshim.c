/* Accessor shim used ONLY at reference time by scripts/darknet_references.py (never shipped).
 *
 * It is compiled against the darknet.h of the Darknet being measured (pjreddie, or AlexeyAB with
 * -DDN_ALEXEYAB) and linked to that build's libdarknet.so, so every struct field below is read with
 * the layout of THAT header: the Python driver never mirrors Darknet's network/layer/detection
 * structs by hand. Functions only read fields and forward calls to the library's own API.
 */
#include <stdlib.h>
#include <string.h>
#include "darknet.h"

#ifdef DN_ALEXEYAB
/* exported by AlexeyAB's libdarknet.so but not declared in its include/darknet.h */
image load_image(char *filename, int w, int h, int c);
network parse_network_cfg_custom(char *filename, int batch, int time_steps);
#endif

/* ---- our own stable codes (the two Darknets' enums differ) ---- */
enum { T_CONV = 0, T_MAXPOOL, T_ROUTE, T_SHORTCUT, T_UPSAMPLE, T_YOLO, T_REGION, T_REORG, T_OTHER,
       T_REORG3D, T_SAM, T_SCALE_CHANNELS, T_AVGPOOL, T_DROPOUT };
enum { A_LINEAR = 0, A_LEAKY, A_LOGISTIC, A_MISH, A_RELU, A_SWISH, A_OTHER };

static int type_code(LAYER_TYPE t) {
    switch (t) {
    case CONVOLUTIONAL: return T_CONV;
    case MAXPOOL: return T_MAXPOOL;
    case ROUTE: return T_ROUTE;
    case SHORTCUT: return T_SHORTCUT;
    case UPSAMPLE: return T_UPSAMPLE;
    case YOLO: return T_YOLO;
    case REGION: return T_REGION;
    case AVGPOOL: return T_AVGPOOL;
    case DROPOUT: return T_DROPOUT;
#ifdef DN_ALEXEYAB
    case REORG_OLD: return T_REORG; /* AlexeyAB's [reorg] */
    case REORG: return T_REORG3D;   /* AlexeyAB's [reorg3d] */
    case SAM: return T_SAM;
    case SCALE_CHANNELS: return T_SCALE_CHANNELS;
#else
    case REORG: return T_REORG;
#endif
    default: return T_OTHER;
    }
}

static int act_code(ACTIVATION a) {
    switch (a) {
    case LINEAR: return A_LINEAR;
    case LEAKY: return A_LEAKY;
    case LOGISTIC: return A_LOGISTIC;
    case RELU: return A_RELU;
#ifdef DN_ALEXEYAB
    case MISH: return A_MISH;
    case SWISH: return A_SWISH;
#endif
    default: return A_OTHER;
    }
}

int dn_is_alexeyab(void) {
#ifdef DN_ALEXEYAB
    return 1;
#else
    return 0;
#endif
}

network *dn_load(char *cfg, char *weights) {
#ifdef DN_ALEXEYAB
    /* what `detector test` does: parse with batch=1, load weights, fuse BN, binary weights */
    network *net = load_network_custom(cfg, weights, 0, 1);
    calculate_binary_weights(*net);
#else
    network *net = load_network(cfg, weights, 0);
    set_batch_network(net, 1);
#endif
    return net;
}

/* the cfg as parsed, without weights and before any batch-norm fusion (for the conv specs) */
network *dn_parse(char *cfg) {
#ifdef DN_ALEXEYAB
    network *net = malloc(sizeof(network));
    *net = parse_network_cfg_custom(cfg, 1, 1);
    return net;
#else
    return parse_network_cfg(cfg);
#endif
}

int dn_num_layers(network *net) { return net->n; }
int dn_net_w(network *net) { return net->w; }
int dn_net_h(network *net) { return net->h; }
int dn_net_letter_box(network *net) {
#ifdef DN_ALEXEYAB
    return net->letter_box;
#else
    (void)net;
    return 0;
#endif
}

/* 20 ints: type, act, n, c, h, w, out_c, out_h, out_w, size, stride, groups, batch_normalize,
 * classes, coords, softmax, new_coords, group_id, nms_kind, outputs */
void dn_layer_info(network *net, int i, int *o) {
    layer l = net->layers[i];
    memset(o, 0, 20 * sizeof(int));
    o[0] = type_code(l.type);
    o[1] = act_code(l.activation);
    o[2] = l.n; o[3] = l.c; o[4] = l.h; o[5] = l.w;
    o[6] = l.out_c; o[7] = l.out_h; o[8] = l.out_w;
    o[9] = l.size; o[10] = l.stride; o[11] = l.groups; o[12] = l.batch_normalize;
    o[13] = l.classes; o[14] = l.coords; o[15] = l.softmax;
#ifdef DN_ALEXEYAB
    o[16] = l.new_coords; o[17] = l.group_id; o[18] = (int)l.nms_kind;
#else
    o[16] = -1; o[17] = -1; o[18] = -1;
#endif
    o[19] = l.outputs;
}

/* 2 floats: scale_x_y, beta_nms (1, 0 for pjreddie, which has neither) */
void dn_layer_floats(network *net, int i, float *o) {
#ifdef DN_ALEXEYAB
    o[0] = net->layers[i].scale_x_y; o[1] = net->layers[i].beta_nms;
#else
    (void)net; (void)i;
    o[0] = 1; o[1] = 0;
#endif
}

/* route inputs (absolute indices) / shortcut source; returns the count */
int dn_layer_inputs(network *net, int i, int *o, int cap) {
    layer l = net->layers[i];
    if (l.type == ROUTE) {
        int k;
        for (k = 0; k < l.n && k < cap; ++k) o[k] = l.input_layers[k];
        return l.n;
    }
    if (l.type == SHORTCUT && cap > 0) { o[0] = l.index; return 1; }
#ifdef DN_ALEXEYAB
    if ((l.type == SAM || l.type == SCALE_CHANNELS) && cap > 0) { o[0] = l.index; return 1; }
#endif
    return 0;
}

float *dn_layer_output(network *net, int i) { return net->layers[i].output; }

/* ---- images (heap copies of Darknet's `image` struct, so Python never passes it by value) ---- */
image *dn_image_load(char *path) {
    image *im = malloc(sizeof(image));
#ifdef DN_ALEXEYAB
    *im = load_image(path, 0, 0, 3); /* what `detector test` calls (net.c == 3) */
#else
    *im = load_image_color(path, 0, 0); /* what python/darknet.py calls */
#endif
    return im;
}
image *dn_image_letterbox(image *im, int w, int h) {
    image *o = malloc(sizeof(image)); *o = letterbox_image(*im, w, h); return o;
}
image *dn_image_resize(image *im, int w, int h) {
    image *o = malloc(sizeof(image)); *o = resize_image(*im, w, h); return o;
}
int dn_image_w(image *im) { return im->w; }
int dn_image_h(image *im) { return im->h; }
int dn_image_c(image *im) { return im->c; }
float *dn_image_data(image *im) { return im->data; }
void dn_image_free(image *im) { free_image(*im); free(im); }

/* ---- forward passes ---- */
float *dn_predict(network *net, float *input) {
#ifdef DN_ALEXEYAB
    return network_predict_ptr(net, input);
#else
    return network_predict(net, input);
#endif
}
#ifndef DN_ALEXEYAB
float *dn_predict_image(network *net, image *im) { return network_predict_image(net, *im); }
#endif

/* ---- detections ---- */
detection *dn_boxes(network *net, int w, int h, float thresh, float hier, int relative, int letter, int *num) {
#ifdef DN_ALEXEYAB
    return get_network_boxes(net, w, h, thresh, hier, 0, relative, num, letter);
#else
    (void)letter;
    return get_network_boxes(net, w, h, thresh, hier, 0, relative, num);
#endif
}

/* kind: 0 do_nms_obj, 1 do_nms_sort, otherwise AlexeyAB diounms_sort with NMS_KIND kind-1 */
void dn_nms(detection *dets, int num, int classes, float nms, int kind, float beta) {
    if (kind == 0) { do_nms_obj(dets, num, classes, nms); return; }
    if (kind == 1) { do_nms_sort(dets, num, classes, nms); return; }
#ifdef DN_ALEXEYAB
    diounms_sort(dets, num, classes, nms, (NMS_KIND)(kind - 1), beta);
#else
    (void)beta;
#endif
}

/* 5 floats x, y, w, h, objectness, and the first `classes` probabilities (the prob array has the
 * LAST layer's classes entries; pjreddie's region detections leave detection.classes unset) */
void dn_det(detection *dets, int i, float *box, float *probs, int classes) {
    detection d = dets[i];
    int k;
    box[0] = d.bbox.x; box[1] = d.bbox.y; box[2] = d.bbox.w; box[3] = d.bbox.h; box[4] = d.objectness;
    for (k = 0; k < classes; ++k) probs[k] = d.prob[k];
}

void dn_free_dets(detection *dets, int num) { free_detections(dets, num); }
