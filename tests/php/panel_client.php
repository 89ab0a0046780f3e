<?php
// A panel API client in the style resellers copy from panels' API documentation: a class that
// POSTs `name=urlencode(value)` pairs with curl and decodes the JSON answer into objects.

class PanelClient
{
    public $api_url;
    public $api_key;

    public function __construct($api_url, $api_key)
    {
        $this->api_url = $api_url;
        $this->api_key = $api_key;
    }

    public function services()
    {
        return json_decode($this->connect(array('key' => $this->api_key, 'action' => 'services')));
    }

    public function order($data)
    {
        $post = array_merge(array('key' => $this->api_key, 'action' => 'add'), $data);
        return json_decode($this->connect($post));
    }

    public function status($order_id)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'status', 'order' => $order_id,
        )));
    }

    public function multiStatus($order_ids)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'status', 'orders' => implode(',', $order_ids),
        )));
    }

    public function cancel($order_ids)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'cancel', 'orders' => implode(',', $order_ids),
        )));
    }

    public function refill($order_id)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'refill', 'order' => $order_id,
        )));
    }

    public function multiRefill($order_ids)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'refill', 'orders' => implode(',', $order_ids),
        )));
    }

    public function refillStatus($refill_id)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'refill_status', 'refill' => $refill_id,
        )));
    }

    public function multiRefillStatus($refill_ids)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'refill_status',
            'refills' => implode(',', $refill_ids),
        )));
    }

    public function balance()
    {
        return json_decode($this->connect(array('key' => $this->api_key, 'action' => 'balance')));
    }

    private function connect($post)
    {
        $pairs = array();
        foreach ($post as $name => $value) {
            $pairs[] = $name . '=' . urlencode($value);
        }
        $ch = curl_init($this->api_url);
        curl_setopt($ch, CURLOPT_POST, 1);
        curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
        curl_setopt($ch, CURLOPT_HEADER, 0);
        curl_setopt($ch, CURLOPT_FOLLOWLOCATION, true);
        curl_setopt($ch, CURLOPT_POSTFIELDS, join('&', $pairs));
        curl_setopt($ch, CURLOPT_USERAGENT, 'Mozilla/4.0 (compatible; MSIE 5.01; Windows NT 5.0)');
        $result = curl_exec($ch);
        if (curl_errno($ch) != 0 && empty($result)) {
            $result = false;
        }
        curl_close($ch);
        return $result;
    }
}

// Drives every action the test needs and prints what came back, as JSON.
$api = new PanelClient($argv[1], $argv[2]);
$out = array();

$services = $api->services();
$out['first_service_is_integer_1'] = $services[0]->service === 1;
$out['rate'] = $services[0]->rate;
$out['balance_before'] = $api->balance()->balance;

$order = $api->order(array(
    'service' => 1, 'link' => 'https://www.tiktok.com/@php/video/7000000000000000001',
    'quantity' => 1000,
));
$out['order'] = $order->order;
$deadline = time() + 60;
do {
    $status = $api->status($order->order);
    if (in_array($status->status, array('Completed', 'Partial', 'Canceled'))) {
        break;
    }
    usleep(200000);
} while (time() < $deadline);
$out['status'] = $status;

$multi = $api->multiStatus(array($order->order, 987654));
$out['multi_known'] = $multi->{$order->order}->status;
$out['multi_unknown'] = $multi->{'987654'}->error;

// TikTok takes views away; the order is refilled (the sandbox's control API sets the count).
$ch = curl_init($argv[3] . '/sandbox/videos/7000000000000000001');
curl_setopt($ch, CURLOPT_CUSTOMREQUEST, 'PUT');
curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
curl_setopt($ch, CURLOPT_POSTFIELDS, json_encode(array('plays' => intval($status->start_count) + 500)));
curl_exec($ch);
curl_close($ch);
$refill = $api->refill($order->order);
$out['refill'] = $refill->refill;
$deadline = time() + 60;
do {
    $refill_status = $api->refillStatus($refill->refill);
    if (in_array($refill_status->status, array('Completed', 'Partial', 'Rejected'))) {
        break;
    }
    usleep(200000);
} while (time() < $deadline);
$out['refill_status'] = $refill_status->status;
$out['multi_refill'] = $api->multiRefill(array(987654));
$out['multi_refill_status'] = $api->multiRefillStatus(array($refill->refill, 987654));

$pending = $api->order(array(
    'service' => 2, 'link' => 'https://vm.tiktok.com/ZMphp42/', 'quantity' => 100,
));
$out['cancel'] = $api->cancel(array($pending->order, 987654));
$out['bad_link'] = $api->order(array(
    'service' => 1, 'link' => 'https://www.tiktok.com/@php', 'quantity' => 100,
))->error;
$out['balance_after'] = $api->balance()->balance;

echo json_encode($out), "\n";
